"""``rationalrewards serve``: the reward server on uvicorn (thin: options -> ``create_app``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..cli.common import (
    EXIT_INPUT,
    backend_command,
    err_console,
    fail,
    make_reward_model,
)


@backend_command(defaults={"concurrency": 64})
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind; loopback by default.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8080,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="RATIONALREWARDS_TOKEN", show_envvar=True,
        help="Bearer token required on /v1/* and /metrics (/healthz stays open).")] = None,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0.001, help="Larger bodies get 413.")] = 64.0,
    max_images_per_request: Annotated[int, typer.Option(
        "--max-images-per-request", min=1, help="Requests with more images (sources included) get 413.")] = 64,
    scores_only: Annotated[bool, typer.Option(
        "--scores-only/--full-critique",
        help="Default for requests that do not say: stop the judge before the refinement tail.")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    backend: dict[str, Any] | None = None,
) -> None:
    """Serve rewards over HTTP: POST /v1/reward, POST /v1/compare, GET /healthz, GET /metrics."""
    from .server import is_loopback

    if not is_loopback(host) and not token:
        fail(f"refusing to listen on {host} without a token: set --token (or $RATIONALREWARDS_TOKEN), "
             "or keep the default --host 127.0.0.1", EXIT_INPUT)
    try:
        from .app import create_app
        from .server import serve_forever
    except ModuleNotFoundError as exc:
        fail(f"the reward server needs FastAPI and uvicorn ({exc.name} is missing): "
             "pip install 'rationalrewards[serve]'", EXIT_INPUT)
    assert backend is not None
    rm = make_reward_model(backend)
    app = create_app(rm, token=token or None, max_body_bytes=int(max_body_mb * 1024 * 1024),
                     max_images_per_request=max_images_per_request, scores_only=scores_only,
                     close_on_shutdown=True)
    auth = "bearer token required" if token else "no token (loopback only)"
    err_console.print(f"reward server on http://{host}:{port}  ({auth}; backend {rm.describe().get('backend')}, "
                      f"model {rm.describe().get('model')})")
    serve_forever(app, host=host, port=port, log_level=log_level)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``rationalrewards`` CLI."""
    app.command("serve")(serve)
