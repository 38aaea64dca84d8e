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
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback: only this machine can connect).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port to listen on (0 picks a free one).")] = 8080,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="RATIONALREWARDS_TOKEN", show_envvar=True,
        help="Bearer token required on /v1/* and /metrics (/healthz stays open).")] = None,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0.001, max=4096.0,
                                                  help="Larger bodies get 413.")] = 64.0,
    max_images_per_request: Annotated[int, typer.Option(
        "--max-images-per-request", min=1, max=4096,
        help="Requests with more images (sources included) or items get 413.")] = 64,
    max_image_megapixels: Annotated[float, typer.Option(
        "--max-image-megapixels", min=0.01, max=64.0,
        help="One image whose header declares more megapixels gets 413 (nothing is decoded).")] = 16.0,
    max_request_megapixels: Annotated[float, typer.Option(
        "--max-request-megapixels", min=0.01, max=4096.0,
        help="A request whose images declare more megapixels in total gets 413.")] = 64.0,
    max_decoding_megapixels: Annotated[float, typer.Option(
        "--max-decoding-megapixels", min=0.01, max=65536.0,
        help="Megapixels all requests together may be decoding at once; over it, a request waits "
             "--decode-wait seconds, then gets 429 with Retry-After.")] = 256.0,
    decode_wait: Annotated[float, typer.Option(
        "--decode-wait", min=0.0, max=300.0,
        help="Seconds a request may wait for the decode budget before 429.")] = 10.0,
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
        from .app import ServeLimits, create_app
        from .server import serve_forever
    except ModuleNotFoundError as exc:
        fail(f"the reward server needs FastAPI and uvicorn ({exc.name} is missing): "
             "pip install 'rationalrewards[serve]'", EXIT_INPUT)
    assert backend is not None
    limits = {"max_body_bytes": int(max_body_mb * 1024 * 1024), "max_images_per_request": max_images_per_request,
              "max_image_pixels": round(max_image_megapixels * 1e6),
              "max_request_pixels": round(max_request_megapixels * 1e6),
              "max_decoding_pixels": round(max_decoding_megapixels * 1e6), "decode_wait_s": decode_wait}
    # Checked before a model is loaded, in the units of the flags.
    if max_request_megapixels < max_image_megapixels:
        fail(f"--max-request-megapixels ({max_request_megapixels:g}) must be at least --max-image-megapixels "
             f"({max_image_megapixels:g}): a request must be able to carry one image at the cap", EXIT_INPUT)
    if max_decoding_megapixels < max_request_megapixels:
        fail(f"--max-decoding-megapixels ({max_decoding_megapixels:g}) must be at least --max-request-megapixels "
             f"({max_request_megapixels:g}), or a full request could never start decoding", EXIT_INPUT)
    try:
        ServeLimits(**limits)
    except ValueError as exc:
        fail(str(exc), EXIT_INPUT)
    # --concurrency travels in `backend` to the judge's backend: the bound on critiques in
    # flight at the judge over all requests.
    rm = make_reward_model(backend)
    app = create_app(rm, token=token or None, scores_only=scores_only, close_on_shutdown=True, **limits)
    auth = "bearer token required" if token else "no token (loopback only)"
    err_console.print(f"reward server on http://{host}:{port}  ({auth}; backend {rm.describe().get('backend')}, "
                      f"model {rm.describe().get('model')})")
    serve_forever(app, host=host, port=port, log_level=log_level)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``rationalrewards`` CLI."""
    app.command("serve")(serve)
