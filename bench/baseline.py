"""The benchmark baseline: a minimal Litestar app answering constant JSON, served like `m2m serve`.

Run: python bench/baseline.py --host 127.0.0.1 --port 8100 --workers 2
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from litestar import Litestar, get, post

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
        openapi_config=None,
        debug=False,
        logging_config=None,
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
def main(host: str, port: int, workers: int) -> None:
    """Serve the baseline exactly as `m2m serve` serves the service (api.cli.run_uvicorn)."""
    from api.cli import run_uvicorn

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    run_uvicorn("baseline:create_app", host=host, port=port, workers=workers)


if __name__ == "__main__":
    main()
