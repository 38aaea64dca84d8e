"""The reward server: a FastAPI app around one :class:`~rationalrewards.RewardModel`.

Every item of every request in flight goes to the backend at once; the backend does the
batching (the in-process transformers backend gathers concurrent calls into ``generate``
batches; the OpenAI-compatible backend keeps up to ``--concurrency`` requests in flight at its
server, which batches them). Results come back per request, in the request's order.

Safety: the server binds loopback unless told otherwise, checks a bearer token when one is set,
refuses bodies over ``max_body_bytes`` (413) and requests carrying more than
``max_images_per_request`` images (413), and reads images only from the request itself
(base64 / data: URLs) — it never fetches a URL or opens a path named by a client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from .. import __version__
from ..images import ImageInputError, PreparedImage, load_image
from .metrics import ServerMetrics
from .schemas import (
    CompareRequest,
    CompareResponse,
    ErrorResponse,
    HealthResponse,
    RewardRequest,
    RewardResponse,
)

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_IMAGES_PER_REQUEST = 64
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")
_ENDPOINTS = {"/v1/reward": "reward", "/v1/compare": "compare"}


class ApiError(Exception):
    """A request the server refuses; becomes ``{"error", "kind", "details"}`` with ``status``."""

    def __init__(self, status: int, kind: str, message: str, details: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.details = details or []
        self.headers = headers


def decode_wire_image(value: str, *, name: str, max_pixels: int | None) -> PreparedImage:
    """An image sent by a client: plain base64 or a ``data:`` URL, nothing else.

    Decided by form, never by probing the filesystem: a string that is not a data URL is
    base64 or it is an error, so a path or URL can never be opened or fetched.
    """
    text = value.strip()
    if text.startswith("data:"):
        return load_image(text, max_pixels=max_pixels, allow_paths=False, allow_base64=True, name=name)
    if _URL.match(text):
        raise ImageInputError(f"{name}: URLs are not fetched; send the image bytes as base64 or a data: URL")
    compact = "".join(text.split())  # clients that wrap base64 at 76 columns
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ImageInputError(
            f"{name}: not valid base64 (send the image bytes as base64 or a data: URL; paths and URLs are refused)"
        ) from None
    if not data:
        raise ImageInputError(f"{name}: empty image")
    return load_image(data, max_pixels=max_pixels, allow_paths=False, name=name)


def _sources_of(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _source_fields(i: int, value: str | list[str] | None) -> list[tuple[str, str]]:
    """(field path, wire string) of an item's source images, named as the client wrote them."""
    if isinstance(value, list):
        return [(f"items[{i}].source[{k}]", s) for k, s in enumerate(value)]
    return [(f"items[{i}].source", value)] if value is not None else []


class _MetricsMiddleware:
    """Times every ``/v1/*`` request and records its final status (auth failures included)."""

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Awaitable[Any]],
                       send: Callable[..., Awaitable[Any]]) -> None:
        endpoint = _ENDPOINTS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.request_done(endpoint, status, time.perf_counter() - started)


def create_app(
    reward_model: Any,
    *,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_images_per_request: int = DEFAULT_MAX_IMAGES_PER_REQUEST,
    scores_only: bool = False,
    close_on_shutdown: bool = False,
    metrics: ServerMetrics | None = None,
) -> FastAPI:
    """Build the reward server's ASGI app.

    Args:
        reward_model: a :class:`~rationalrewards.RewardModel` (anything with ``acritique`` and
            ``acompare``).
        token: bearer token required on ``/v1/*`` and ``/metrics`` (``/healthz`` and the
            OpenAPI schema stay open). None disables auth.
        max_body_bytes: larger bodies get 413 (checked on ``Content-Length`` and while reading).
        max_images_per_request: requests carrying more images (sources included) get 413.
        scores_only: default of the request field ``scores_only``.
        close_on_shutdown: close the reward model when the app shuts down.
        metrics: share a :class:`ServerMetrics` (tests read it directly).
    """
    if max_body_bytes < 1 or max_images_per_request < 1:
        raise ValueError("max_body_bytes and max_images_per_request must be positive")
    rm = reward_model
    stats = metrics or ServerMetrics()
    max_pixels = getattr(rm, "max_pixels", None)
    limits = {"max_body_bytes": max_body_bytes, "max_images_per_request": max_images_per_request}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield
        if close_on_shutdown:
            await rm.aclose()

    app = FastAPI(
        title="RationalRewards reward server",
        version=__version__,
        description=(
            "Critique-before-score rewards for visual generation. Send images as base64 or data: URLs; "
            "results come back in request order with per-dimension scores, a scalar reward and the critique."
        ),
        lifespan=lifespan,
    )
    app.state.metrics = stats
    app.state.reward_model = rm
    bearer = HTTPBearer(auto_error=False, description="Required when the server was started with a token.")

    async def require_token(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            endpoint = _ENDPOINTS.get(request.url.path, request.url.path.strip("/"))
            stats.request_failed(endpoint, "auth")
            raise ApiError(401, "auth", "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                           headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        body = ErrorResponse(error=exc.message, kind=exc.kind, details=exc.details).model_dump()
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Per-item failures never get here (they are results with ok=false); this is a bug.
        stats.request_failed(_ENDPOINTS.get(request.url.path, request.url.path.strip("/")), "server_error")
        body = ErrorResponse(error=f"internal error: {type(exc).__name__}: {exc}", kind="server_error").model_dump()
        return JSONResponse(body, status_code=500)

    async def read_json(request: Request, endpoint: str) -> Any:
        length = request.headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                stats.request_failed(endpoint, "bad_json")
                raise ApiError(400, "bad_json", f"bad Content-Length header {length!r}") from None
            if declared > max_body_bytes:
                stats.request_failed(endpoint, "too_large")
                raise ApiError(413, "too_large", f"body of {declared} bytes is over the limit of {max_body_bytes} "
                                                 "bytes (--max-body-mb); send fewer or smaller images per request")
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_body_bytes:
                stats.request_failed(endpoint, "too_large")
                raise ApiError(413, "too_large", f"body is over the limit of {max_body_bytes} bytes (--max-body-mb)")
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            # Megabytes of base64 take a while to parse: keep the event loop serving others meanwhile.
            return json.loads(body) if total < (1 << 20) else await asyncio.to_thread(json.loads, body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            stats.request_failed(endpoint, "bad_json")
            raise ApiError(400, "bad_json", f"malformed JSON body: {exc}") from None

    def validate(model: type[Any], data: Any, endpoint: str) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            stats.request_failed(endpoint, "invalid")
            details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                       for e in exc.errors(include_url=False, include_input=False)]
            first = details[0]
            where = ".".join(str(x) for x in first["loc"]) or "body"
            raise ApiError(422, "invalid", f"invalid request: {where}: {first['msg']}"
                           + (f" (and {len(details) - 1} more)" if len(details) > 1 else ""), details) from None

    def check_image_count(count: int, endpoint: str) -> None:
        if count > max_images_per_request:
            stats.request_failed(endpoint, "too_many_images")
            raise ApiError(413, "too_many_images", f"request carries {count} images; this server accepts at most "
                                                   f"{max_images_per_request} per request (--max-images-per-request)")

    async def decode_all(jobs: list[tuple[str, str]], endpoint: str) -> dict[str, PreparedImage]:
        """Decode (field path -> wire string) pairs off the event loop; all errors at once -> 400."""

        def work() -> tuple[dict[str, PreparedImage], list[dict[str, Any]]]:
            out: dict[str, PreparedImage] = {}
            errors: list[dict[str, Any]] = []
            for path, value in jobs:
                try:
                    out[path] = decode_wire_image(value, name=path, max_pixels=max_pixels)
                except ImageInputError as exc:
                    errors.append({"loc": path.replace("]", "").replace("[", ".").split("."), "msg": str(exc)})
            return out, errors

        images, errors = await asyncio.to_thread(work)
        if errors:
            stats.request_failed(endpoint, "bad_image")
            raise ApiError(400, "bad_image", f"{len(errors)} unusable image(s); first: {errors[0]['msg']}", errors)
        return images

    async def track(endpoint: str, coro: Awaitable[Any]) -> Any:
        res = await coro
        usage = res.usage
        stats.item_done(endpoint, res.ok, res.error_kind, usage.latency_s if usage else None,
                        usage.completion_tokens if usage else 0)
        return res.to_json()

    async def in_flight(n_items: int, work: Awaitable[list[Any]]) -> list[Any]:
        stats.in_flight_requests += 1
        stats.in_flight_items += n_items
        try:
            return await work
        finally:
            stats.in_flight_requests -= 1
            stats.in_flight_items -= n_items

    error_responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse, "description": desc}
        for code, desc in ((400, "Malformed JSON, bad base64 or an unreadable image"),
                           (401, "Missing or wrong bearer token"),
                           (413, "Body or image count over the server's limits"),
                           (422, "Body does not match the schema (field report in details)"))
    }

    def body_schema(name: str) -> dict[str, Any]:
        return {"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}}

    @app.post("/v1/reward", dependencies=[Depends(require_token)], response_model=None,
              responses={200: {"model": RewardResponse}, **error_responses}, openapi_extra=body_schema("RewardRequest"),
              summary="Critique images (t2i) or edits and return per-dimension scores and rewards")
    async def reward(request: Request) -> JSONResponse:
        body: RewardRequest = validate(RewardRequest, await read_json(request, "reward"), "reward")
        check_image_count(sum(1 + len(_sources_of(it.source)) for it in body.items), "reward")
        jobs: list[tuple[str, str]] = []
        for i, it in enumerate(body.items):
            jobs += [(f"items[{i}].image", it.image), *_source_fields(i, it.source)]
        images = await decode_all(jobs, "reward")
        only = scores_only if body.scores_only is None else body.scores_only

        def call(i: int) -> Awaitable[Any]:
            it = body.items[i]
            srcs = [images[path] for path, _ in _source_fields(i, it.source)]
            return rm.acritique(it.prompt, images[f"items[{i}].image"], srcs or None, id=it.id, scores_only=only)

        results = await in_flight(len(body.items), asyncio.gather(
            *(track("reward", call(i)) for i in range(len(body.items)))))
        return JSONResponse({"results": results})

    @app.post("/v1/compare", dependencies=[Depends(require_token)], response_model=None,
              responses={200: {"model": CompareResponse}, **error_responses},
              openapi_extra=body_schema("CompareRequest"), summary="Compare two images (or two edits of a source)")
    async def compare(request: Request) -> JSONResponse:
        body: CompareRequest = validate(CompareRequest, await read_json(request, "compare"), "compare")
        check_image_count(sum(2 + len(_sources_of(it.source)) for it in body.items), "compare")
        jobs: list[tuple[str, str]] = []
        for i, it in enumerate(body.items):
            jobs += [(f"items[{i}].image_a", it.image_a), (f"items[{i}].image_b", it.image_b),
                     *_source_fields(i, it.source)]
        images = await decode_all(jobs, "compare")

        def call(i: int) -> Awaitable[Any]:
            it = body.items[i]
            srcs = [images[path] for path, _ in _source_fields(i, it.source)]
            return rm.acompare(it.prompt, images[f"items[{i}].image_a"], images[f"items[{i}].image_b"],
                               srcs or None, mode=body.mode, swap=body.swap, tie_tolerance=body.tie_tolerance,
                               id=it.id)

        results = await in_flight(len(body.items), asyncio.gather(
            *(track("compare", call(i)) for i in range(len(body.items)))))
        return JSONResponse({"results": results})

    @app.get("/healthz", response_model=HealthResponse, summary="Liveness, model and limits (no token needed)")
    async def healthz() -> HealthResponse:
        described = rm.describe() if hasattr(rm, "describe") else {}
        # Only what a client needs; backend URLs and keys stay private.
        model = {k: described[k] for k in ("backend", "model", "aggregation", "templates") if k in described}
        return HealthResponse(version=__version__, model=model, limits=limits,
                              in_flight_requests=stats.in_flight_requests)

    @app.get("/metrics", dependencies=[Depends(require_token)], response_class=PlainTextResponse,
             summary="Prometheus text metrics: requests, failures by kind, latency histograms")
    async def metrics_endpoint() -> PlainTextResponse:
        return PlainTextResponse(stats.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (RewardRequest, CompareRequest):
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in js.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components[model.__name__] = js
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(_MetricsMiddleware, metrics=stats)
    return app
