"""The benchmark baseline: a minimal Litestar app answering constant JSON, served like `m2m serve`.

Run: python bench/baseline.py --host 127.0.0.1 --port 8100 --workers 2
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
from litestar import Litestar, get, post

from api.app import STARTED

OK = {"ok": True}


@get("/")
async def constant_get() -> dict[str, bool]:
    return OK


@post("/", status_code=200)
async def constant_post() -> dict[str, bool]:
    return OK


def create_app() -> Litestar:
    # Its lines through the service's own log handler, as the service's (api/app.py).
    return Litestar(
        route_handlers=[constant_get, constant_post],
        # The line the benchmark waits for, as each process of `m2m serve` logs it.
        on_startup=[lambda: logging.getLogger("m2m.api").info(STARTED)],
        openapi_config=None,
        debug=False,
        logging_config=None,
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
def main(host: str, port: int, workers: int) -> None:
    """Serve the baseline exactly as `m2m serve` serves the service (api.cli.run_granian)."""
    from api.cli import run_granian

    # Granian's workers import "baseline:create_app": this directory on their path too.
    bench = str(Path(__file__).resolve().parent)
    sys.path.insert(0, bench)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [bench, os.environ.get("PYTHONPATH")]))
    run_granian("baseline:create_app", host=host, port=port, workers=workers)


if __name__ == "__main__":
    main()
