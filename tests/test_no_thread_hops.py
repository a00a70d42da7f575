"""Nothing the app runs for a request is handed to a worker thread. Litestar runs a plain function
given as a hook, a guard, a dependency (unless told not to) or a sync handler in its thread pool:
a hop there and back on each call, and a wait for the interpreter lock behind whatever else runs,
on the path of every validation."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.utils.sync import AsyncCallable


def _threaded(callable_: Any) -> bool:
    return isinstance(callable_, AsyncCallable)


def test_no_hook_runs_in_a_worker_thread(app: Litestar) -> None:
    hooks = [*app.before_send, *app.after_exception]
    assert [hook.func for hook in hooks if _threaded(hook)] == []


def test_no_handler_guard_or_dependency_runs_in_a_worker_thread(app: Litestar) -> None:
    threaded = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            name = f"{route.path} {sorted(handler.http_methods)}"
            if handler.has_sync_callable and handler.sync_to_thread:
                threaded.append(f"{name}: the handler")
            threaded += [
                f"{name}: guard {guard}" for guard in handler.resolve_guards() if _threaded(guard)
            ]
            for key, provider in handler.resolve_dependencies().items():
                if provider.sync_to_thread or _threaded(provider.dependency):
                    threaded.append(f"{name}: dependency {key}")
            for hook in (handler.before_request, handler.after_request, handler.after_response):
                if hook is not None and _threaded(hook):
                    threaded.append(f"{name}: hook {hook}")
    assert threaded == []
