"""The reward server: a FastAPI app around one :class:`~rationalrewards.RewardModel`.

Every item of every request in flight goes to the backend at once; the backend does the
batching (the in-process transformers backend gathers concurrent calls into ``generate``
batches; the OpenAI-compatible backend keeps up to ``--concurrency`` requests in flight at its
server, which batches them). Results come back per request, in the request's order.

Safety: the server binds loopback unless told otherwise, checks a bearer token when one is set,
and reads images only from the request itself (base64 / data: URLs) — it never fetches a URL or
opens a path named by a client. What a request may cost is bounded before any work is done:

* the body (``max_body_bytes``, 413), its items and images (``max_images_per_request``, 413);
* the pixels: every image's dimensions are read from its header before anything is decoded; one
  image over ``max_image_pixels`` or a request whose images add up to more than
  ``max_request_pixels`` is refused (413) naming the item; and all requests together may decode
  at most ``max_decoding_pixels`` at once — a request that does not fit waits up to
  ``decode_wait_s`` and is then refused with 429 and ``Retry-After``.

A problem with one item's content (text that is not valid Unicode, an image that is not base64
or not a readable image) fails that item only: its result has ``ok=false``,
``error_kind="input"`` and the reason, and the other items are judged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ctypes
import hmac
import io
import json
import logging
import re
import time
import warnings
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from .. import __version__
from ..critique.schema import failed_compare, failed_critique
from ..images import DEFAULT_MAX_INPUT_PIXELS, ImageInputError, PreparedImage, fit_within, load_image
from .metrics import ServerMetrics
from .schemas import (
    MAX_ID_CHARS,
    CompareRequest,
    CompareResponse,
    ErrorResponse,
    HealthResponse,
    RewardRequest,
    RewardResponse,
    text_problem,
)

log = logging.getLogger("rationalrewards.serve")

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_IMAGES_PER_REQUEST = 64
# 16 MP (4000 x 4000): twice a 4K screen, twenty times what the judge reads (0.8 MP).
DEFAULT_MAX_IMAGE_PIXELS = 16_000_000
# 64 MP: a full request (64 images) of images a little over the judge's cap.
DEFAULT_MAX_REQUEST_PIXELS = 64_000_000
# Four such requests decoding at once, server-wide.
DEFAULT_MAX_DECODING_PIXELS = 4 * DEFAULT_MAX_REQUEST_PIXELS
DEFAULT_DECODE_WAIT_S = 10.0
MAX_DECODE_WAIT_S = 300.0
RETRY_AFTER_S = 1
# Formats a client may send. Anything else Pillow can open (EPS runs Ghostscript, some formats
# parse whole files at open) is refused before it is touched.
WIRE_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF")
# Field reports longer than this are cut (a list of 10^5 broken items must not become a 10^5-entry
# answer).
MAX_DETAILS = 20
# Above this many decoded pixels a request hands freed heap memory back to the OS.
_TRIM_AFTER_PIXELS = 4_000_000
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


@dataclass(frozen=True)
class ServeLimits:
    """What one request, and all requests together, may cost the server.

    Attributes:
        max_body_bytes: larger bodies get 413.
        max_images_per_request: more images (sources included), or more items, get 413.
        max_image_pixels: one image whose header declares more pixels gets 413.
        max_request_pixels: a request whose images declare more pixels in total gets 413.
        max_decoding_pixels: pixels all requests together may be decoding at once; a request that
            does not fit waits up to ``decode_wait_s``, then gets 429 with ``Retry-After``.
        decode_wait_s: see above (0 refuses at once).
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_images_per_request: int = DEFAULT_MAX_IMAGES_PER_REQUEST
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS
    max_decoding_pixels: int = DEFAULT_MAX_DECODING_PIXELS
    decode_wait_s: float = DEFAULT_DECODE_WAIT_S

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_images_per_request", "max_image_pixels", "max_request_pixels",
                     "max_decoding_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_image_pixels > DEFAULT_MAX_INPUT_PIXELS:
            raise ValueError(f"max_image_pixels must be at most {DEFAULT_MAX_INPUT_PIXELS} (the image reader's "
                             f"hard limit), got {self.max_image_pixels}")
        if self.max_request_pixels < self.max_image_pixels:
            raise ValueError(f"max_request_pixels ({self.max_request_pixels}) must be at least max_image_pixels "
                             f"({self.max_image_pixels}): a request must be able to carry one image at the cap")
        if self.max_decoding_pixels < self.max_request_pixels:
            raise ValueError(f"max_decoding_pixels ({self.max_decoding_pixels}) must be at least "
                             f"max_request_pixels ({self.max_request_pixels}), or a full request could never start")
        if not (isinstance(self.decode_wait_s, (int, float)) and 0 <= self.decode_wait_s <= MAX_DECODE_WAIT_S):
            raise ValueError(f"decode_wait_s must be between 0 and {MAX_DECODE_WAIT_S:g} s, got {self.decode_wait_s!r}")

    def public(self) -> dict[str, Any]:
        """The limits a client needs to size its requests (served by ``/healthz``)."""
        return {"max_body_bytes": self.max_body_bytes, "max_images_per_request": self.max_images_per_request,
                "max_image_pixels": self.max_image_pixels, "max_request_pixels": self.max_request_pixels,
                "max_decoding_pixels": self.max_decoding_pixels}


# -- images on the wire ----------------------------------------------------------------------

def wire_bytes(value: str, *, name: str) -> bytes:
    """The bytes of an image sent by a client: plain base64 or a base64 ``data:`` URL.

    Decided by form, never by probing the filesystem: a string that is not a data URL is
    base64 or it is an error, so a path or URL can never be opened or fetched.
    """
    text = value.strip()
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or ";base64" not in header:
            raise ImageInputError(f"{name}: data URL is not base64-encoded (use data:image/png;base64,...)")
    elif _URL.match(text):
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
    return data


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header declares, read without decoding a pixel."""

    format: str
    width: int
    height: int
    beyond_guard: bool = False  # Pillow refused to open it: dimensions beyond its bomb guard

    @property
    def pixels(self) -> int:
        return self.width * self.height


class _OverBombLimit(Exception):
    """Pillow refused even to open the image: its header declares an absurd size."""


def _wire_formats() -> tuple[str, ...]:
    Image.init()  # register every plugin (idempotent): open(formats=...) only knows registered ones
    return tuple(f for f in WIRE_FORMATS if f in Image.OPEN)


def probe_image(data: bytes, *, name: str) -> ImageHeader:
    """Format and dimensions from the header (Pillow opens lazily: no pixel is decoded)."""
    formats = _wire_formats()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=formats) as img:
                width, height = img.size
                return ImageHeader(str(img.format), int(width), int(height))
        except Image.DecompressionBombError:
            raise _OverBombLimit from None
        except UnidentifiedImageError:
            raise ImageInputError(
                f"{name}: not a recognised image file (accepted: {', '.join(f for f in WIRE_FORMATS if f != 'MPO')})"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageInputError(f"{name}: corrupt image header ({exc})") from None


def prepare_image(data: bytes, header: ImageHeader, *, name: str, max_pixels: int | None,
                  max_image_pixels: int = DEFAULT_MAX_INPUT_PIXELS) -> PreparedImage:
    """Decode and normalise one probed image for the judge, downscaling as early as possible.

    A JPEG larger than the judge reads is decoded at the smallest 1/2, 1/4 or 1/8 scale that is
    still at least the target size (``draft``: a fraction of the memory and time of a full
    decode); everything else goes through :func:`~rationalrewards.images.load_image`.
    """
    if header.format in ("JPEG", "MPO") and max_pixels and header.pixels > max_pixels:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data), formats=(header.format,))
                img.draft("RGB", fit_within((header.width, header.height), max_pixels))
                img.load()
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as exc:
            raise ImageInputError(f"{name}: corrupt or truncated image ({exc})") from None
        try:
            return load_image(img, max_pixels=max_pixels, max_input_pixels=max_image_pixels, allow_paths=False,
                              name=name)
        finally:
            img.close()
    return load_image(data, max_pixels=max_pixels, max_input_pixels=max_image_pixels, allow_paths=False, name=name)


def decode_wire_image(value: str, *, name: str, max_pixels: int | None,
                      max_image_pixels: int = DEFAULT_MAX_INPUT_PIXELS) -> PreparedImage:
    """An image sent by a client (plain base64 or a ``data:`` URL), ready for the judge.

    Raises :class:`~rationalrewards.images.ImageInputError` naming ``name`` and the problem.
    """
    data = wire_bytes(value, name=name)
    try:
        header = probe_image(data, name=name)
    except _OverBombLimit:
        raise ImageInputError(f"{name}: image is too large to decode safely (decompression bomb guard)") from None
    if header.pixels > max_image_pixels:
        raise ImageInputError(f"{name}: image is {header.width}x{header.height} ({header.pixels} pixels), "
                              f"above the limit of {max_image_pixels}")
    return prepare_image(data, header, name=name, max_pixels=max_pixels, max_image_pixels=max_image_pixels)


_MALLOC_TRIM: Any = None


def _give_memory_back() -> None:
    """Return freed heap pages to the OS (glibc keeps them after large decodes otherwise)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


class _DecodeBudget:
    """Pixels all requests together may be decoding at once (lives on the server's event loop)."""

    def __init__(self, capacity: int, metrics: ServerMetrics) -> None:
        self.capacity = capacity
        self.used = 0
        self.metrics = metrics
        self._cond: asyncio.Condition | None = None

    def _fits(self, pixels: int) -> bool:
        return self.used + pixels <= self.capacity

    def _take(self, pixels: int) -> None:
        self.used += pixels
        self.metrics.decoding_pixels = self.used

    async def acquire(self, pixels: int, wait_s: float) -> bool:
        if self._fits(pixels):
            self._take(pixels)
            return True
        if wait_s <= 0:
            return False
        if self._cond is None:
            self._cond = asyncio.Condition()
        cond = self._cond
        self.metrics.decode_waiting += 1
        try:
            async with cond:
                await asyncio.wait_for(cond.wait_for(lambda: self._fits(pixels)), wait_s)
                self._take(pixels)
                return True
        except asyncio.TimeoutError:
            return False
        finally:
            self.metrics.decode_waiting -= 1

    async def release(self, pixels: int) -> None:
        self.used -= pixels
        self.metrics.decoding_pixels = self.used
        if self._cond is not None:
            async with self._cond:
                self._cond.notify_all()


class _NotJson(ValueError):
    """Python's JSON reader accepts NaN and Infinity; JSON (and every other client) does not."""


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value")


def _loc(path: str) -> list[str]:
    """``items[3].source[1]`` -> ``["items", "3", "source", "1"]``."""
    return path.replace("]", "").replace("[", ".").split(".")


def _json_bytes(payload: Any) -> bytes:
    """UTF-8 JSON; text that cannot be UTF-8 (an unpaired surrogate echoed in an id or a judge's
    answer) is written as a JSON ``\\uXXXX`` escape instead of failing the whole response."""
    try:
        return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(payload, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_json_bytes(payload), status_code=status, headers=headers, media_type="application/json")


def _raw_image_count(items: list[Any], per_item: int) -> int:
    """Images a not-yet-validated body carries (to refuse a 1,000-image source list before
    validating it); malformed items count as one image and are reported by validation."""
    total = 0
    for it in items:
        source = it.get("source") if isinstance(it, dict) else None
        total += per_item + (len(source) if isinstance(source, list) else 0 if source is None else 1)
    return total


@dataclass
class _WireImage:
    item: int
    field: str
    value: str | None
    data: bytes | None = None
    header: ImageHeader | None = None
    prepared: PreparedImage | None = None


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
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS,
    max_decoding_pixels: int = DEFAULT_MAX_DECODING_PIXELS,
    decode_wait_s: float = DEFAULT_DECODE_WAIT_S,
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
        max_body_bytes, max_images_per_request, max_image_pixels, max_request_pixels,
            max_decoding_pixels, decode_wait_s: see :class:`ServeLimits` (validated here; a bad
            value raises ``ValueError`` naming it).
        scores_only: default of the request field ``scores_only``.
        close_on_shutdown: close the reward model when the app shuts down.
        metrics: share a :class:`ServerMetrics` (tests read it directly).
    """
    limits = ServeLimits(max_body_bytes=max_body_bytes, max_images_per_request=max_images_per_request,
                         max_image_pixels=max_image_pixels, max_request_pixels=max_request_pixels,
                         max_decoding_pixels=max_decoding_pixels, decode_wait_s=decode_wait_s)
    rm = reward_model
    stats = metrics or ServerMetrics()
    max_pixels = getattr(rm, "max_pixels", None)
    budget = _DecodeBudget(limits.max_decoding_pixels, stats)

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
    app.state.limits = limits
    bearer = HTTPBearer(auto_error=False, description="Required when the server was started with a token.")

    async def require_token(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not given or not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode()):
            endpoint = _ENDPOINTS.get(request.url.path, request.url.path.strip("/"))
            stats.request_failed(endpoint, "auth")
            raise ApiError(401, "auth", "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                           headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        details = exc.details[:MAX_DETAILS]
        if len(exc.details) > MAX_DETAILS:
            details.append({"msg": f"... and {len(exc.details) - MAX_DETAILS} more"})
        body = ErrorResponse(error=exc.message, kind=exc.kind, details=details).model_dump()
        return _json_response(body, exc.status, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Per-item failures never get here (they are results with ok=false); this is a bug.
        log.exception("unexpected error on %s", request.url.path)
        stats.request_failed(_ENDPOINTS.get(request.url.path, request.url.path.strip("/")), "server_error")
        body = ErrorResponse(error=f"internal error: {type(exc).__name__}: {exc}", kind="server_error").model_dump()
        return _json_response(body, 500)

    def refuse(endpoint: str, status: int, kind: str, message: str, details: list[dict[str, Any]] | None = None,
               headers: dict[str, str] | None = None) -> ApiError:
        stats.request_failed(endpoint, kind)
        return ApiError(status, kind, message, details, headers)

    async def read_json(request: Request, endpoint: str) -> Any:
        ctype = request.headers.get("content-type")
        if ctype is not None:
            media, _, params = ctype.partition(";")
            media = media.strip().lower()
            if media != "application/json" and not media.endswith("+json"):
                raise refuse(endpoint, 415, "unsupported_media_type",
                             f"Content-Type {media[:100]!r} is not JSON; send the body as application/json",
                             [{"loc": ["header", "content-type"], "msg": "expected application/json"}])
            charset = re.search(r"charset\s*=\s*\"?([^\s\";]+)", params, re.IGNORECASE)
            if charset and charset.group(1).lower().replace("_", "-") not in ("utf-8", "utf8"):
                raise refuse(endpoint, 415, "unsupported_media_type",
                             f"charset {charset.group(1)[:40]!r} is not supported; JSON bodies must be UTF-8",
                             [{"loc": ["header", "content-type"], "msg": "expected charset=utf-8"}])
        length = request.headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise refuse(endpoint, 400, "bad_json", f"bad Content-Length header {length[:40]!r}") from None
            if declared > limits.max_body_bytes:
                raise refuse(endpoint, 413, "too_large",
                             f"body of {declared} bytes is over the limit of {limits.max_body_bytes} bytes "
                             "(--max-body-mb); send fewer or smaller images per request",
                             [{"loc": ["body"], "limit": "max_body_bytes", "value": limits.max_body_bytes,
                               "msg": "body too large"}])
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limits.max_body_bytes:
                raise refuse(endpoint, 413, "too_large",
                             f"body is over the limit of {limits.max_body_bytes} bytes (--max-body-mb)",
                             [{"loc": ["body"], "limit": "max_body_bytes", "value": limits.max_body_bytes,
                               "msg": "body too large"}])
            chunks.append(chunk)
        body = b"".join(chunks)
        del chunks

        def parse() -> Any:
            text = body.decode("utf-8")
            return json.loads(text[1:] if text.startswith("\ufeff") else text, parse_constant=_no_constant)

        try:
            # Megabytes of base64 take a while to parse: keep the event loop serving others meanwhile.
            return parse() if total < (1 << 20) else await asyncio.to_thread(parse)
        except UnicodeDecodeError as exc:
            raise refuse(endpoint, 400, "bad_json",
                         f"body is not UTF-8 (byte 0x{body[exc.start]:02x} at offset {exc.start}); "
                         "JSON bodies must be UTF-8", [{"loc": ["body"], "msg": "invalid UTF-8", "offset": exc.start}]
                         ) from None
        except json.JSONDecodeError as exc:
            raise refuse(endpoint, 400, "bad_json", f"malformed JSON body: {exc}",
                         [{"loc": ["body"], "msg": exc.msg, "line": exc.lineno, "column": exc.colno}]) from None
        except _NotJson as exc:
            raise refuse(endpoint, 400, "bad_json", f"malformed JSON body: {exc}",
                         [{"loc": ["body"], "msg": str(exc)}]) from None
        except ValueError as exc:  # e.g. an integer literal of 5,000 digits (Python's int-conversion limit)
            raise refuse(endpoint, 400, "bad_json", f"malformed JSON body: {exc}",
                         [{"loc": ["body"], "msg": "unreadable number"}]) from None
        except RecursionError:
            raise refuse(endpoint, 400, "bad_json",
                         "JSON body is nested too deeply; a request is an object with an 'items' list, "
                         "a few levels deep", [{"loc": ["body"], "msg": "nested too deeply"}]) from None

    def precheck(data: Any, endpoint: str, per_item: int) -> None:
        """Limits that must hold before the body is validated: validating 10^6 items is itself
        the expensive part."""
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(items, list):
            return  # validation reports it with a field report
        cap = limits.max_images_per_request
        if len(items) > cap:
            raise refuse(endpoint, 413, "too_many_items",
                         f"request has {len(items)} items; this server accepts at most {cap} per request "
                         "(every item carries at least one image; --max-images-per-request)",
                         [{"loc": ["items"], "limit": "max_images_per_request", "value": cap,
                           "count": len(items), "msg": "too many items"}])
        count = _raw_image_count(items, per_item)
        if count > cap:
            raise refuse(endpoint, 413, "too_many_images",
                         f"request carries {count} images; this server accepts at most {cap} per request "
                         "(--max-images-per-request)",
                         [{"loc": ["items"], "limit": "max_images_per_request", "value": cap, "count": count,
                           "msg": "too many images"}])

    def validate(model: type[Any], data: Any, endpoint: str) -> Any:
        try:
            parsed = model.model_validate(data)
        except ValidationError as exc:
            details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                       for e in exc.errors(include_url=False, include_input=False)]
        else:
            details = [{"loc": ["items", i, "id"], "msg": f"String should have at most {MAX_ID_CHARS} characters",
                        "type": "string_too_long"}
                       for i, it in enumerate(parsed.items) if it.id is not None and len(it.id) > MAX_ID_CHARS]
            if not details:
                return parsed
        first = details[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise refuse(endpoint, 422, "invalid", f"invalid request: {where}: {first['msg']}"
                     + (f" (and {len(details) - 1} more)" if len(details) > 1 else ""), details)

    async def prepare_all(endpoint: str, wires: list[_WireImage], item_errors: dict[int, str]) -> None:
        """Read every image of the healthy items: headers first (limits -> 413/429), then pixels.

        Per-item problems go into ``item_errors`` (first problem of an item wins); the wire
        strings and bytes are dropped as soon as they are no longer needed.
        """
        def read_headers() -> None:
            for w in wires:
                if w.item in item_errors:
                    w.value = None
                    continue
                assert w.value is not None
                try:
                    w.data = wire_bytes(w.value, name=w.field)
                    w.header = probe_image(w.data, name=w.field)
                except _OverBombLimit:
                    w.header = ImageHeader("?", 0, 0, beyond_guard=True)
                except ImageInputError as exc:
                    item_errors.setdefault(w.item, str(exc))
                    w.data = None
                w.value = None

        await asyncio.to_thread(read_headers)
        live = [w for w in wires if w.header is not None and w.item not in item_errors]
        for w in live:
            assert w.header is not None
            if w.header.beyond_guard or w.header.pixels > limits.max_image_pixels:
                size = ("larger than the image reader's decompression-bomb guard" if w.header.beyond_guard else
                        f"{w.header.width}x{w.header.height} ({w.header.pixels} pixels)")
                raise refuse(endpoint, 413, "image_too_large",
                             f"{w.field} is {size}, over the per-image limit of {limits.max_image_pixels} pixels "
                             f"(--max-image-megapixels); downscale it before sending"
                             + (f" (the judge reads at most {max_pixels} pixels)" if max_pixels else ""),
                             [{"loc": _loc(w.field), "item": w.item, "limit": "max_image_pixels",
                               "value": limits.max_image_pixels, "pixels": w.header.pixels or None,
                               "msg": "image over the per-image pixel limit"}])
        total = 0
        for w in live:
            assert w.header is not None
            total += w.header.pixels
            if total > limits.max_request_pixels:
                declared = sum(x.header.pixels for x in live if x.header is not None)
                raise refuse(endpoint, 413, "too_many_pixels",
                             f"request declares {declared} pixels in {len(live)} images, over the per-request "
                             f"budget of {limits.max_request_pixels} (--max-request-megapixels); it ran out at "
                             f"{w.field}; send fewer or smaller images per request",
                             [{"loc": _loc(w.field), "item": w.item, "limit": "max_request_pixels",
                               "value": limits.max_request_pixels, "pixels": declared,
                               "msg": "request over the per-request pixel budget"}])
        if not live:
            return
        if not await budget.acquire(total, limits.decode_wait_s):
            raise refuse(endpoint, 429, "busy",
                         f"the server is busy decoding other requests' images ({budget.used} of its "
                         f"{limits.max_decoding_pixels}-pixel budget in use, --max-decoding-megapixels); this "
                         f"request needs {total} pixels; retry after {RETRY_AFTER_S} s",
                         [{"loc": ["items"], "limit": "max_decoding_pixels", "value": limits.max_decoding_pixels,
                           "pixels": total, "msg": "server-wide decode budget busy"}],
                         headers={"Retry-After": str(RETRY_AFTER_S)})

        def decode() -> None:
            for w in live:
                assert w.data is not None and w.header is not None
                try:
                    if w.item not in item_errors:
                        p = prepare_image(w.data, w.header, name=w.field, max_pixels=max_pixels,
                                          max_image_pixels=limits.max_image_pixels)
                        # Keep the encoded form only while the item waits for the judge (possibly
                        # minutes): an HTTP judge sends the bytes, an in-process one decodes the
                        # small image again on demand (PreparedImage decodes lazily).
                        w.prepared = PreparedImage(p.data, p.mime, p.source, p.original_size)
                        stats.image_decoded(w.header.pixels)
                except ImageInputError as exc:
                    item_errors.setdefault(w.item, str(exc))
                finally:
                    w.data = None  # the encoded bytes go as soon as the image is read
            if total > _TRIM_AFTER_PIXELS:
                _give_memory_back()

        try:
            await asyncio.to_thread(decode)
        finally:
            await budget.release(total)

    async def judged(endpoint: str, call: Callable[[], Awaitable[Any]], fail: Callable[[str, str], Any]) -> Any:
        """One item's result as JSON; an exception becomes that item's failure, never the batch's."""
        try:
            res = await call()
        except Exception as exc:  # a bug while judging one item must not sink the others
            log.exception("%s: unexpected error while judging an item", endpoint)
            res = fail("backend", f"server error while judging this item: {type(exc).__name__}: {exc}")
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

    def wire_images(i: int, named: list[tuple[str, str]], source: str | list[str] | None) -> list[_WireImage]:
        out = [_WireImage(i, f"items[{i}].{field}", value) for field, value in named]
        if isinstance(source, list):
            out += [_WireImage(i, f"items[{i}].source[{k}]", s) for k, s in enumerate(source)]
        elif source is not None:
            out.append(_WireImage(i, f"items[{i}].source", source))
        return out

    error_responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse, "description": desc}
        for code, desc in ((400, "Body is not UTF-8 JSON (malformed, or nested too deeply)"),
                           (401, "Missing or wrong bearer token"),
                           (413, "Body, item count, image count or pixels over the server's limits "
                                 "(details name the limit and the item)"),
                           (415, "Content-Type is not application/json (UTF-8)"),
                           (422, "Body does not match the schema (field report in details)"),
                           (429, "The server-wide decode budget is busy; retry after Retry-After seconds"))
    }

    def body_schema(name: str) -> dict[str, Any]:
        return {"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}}

    @app.post("/v1/reward", dependencies=[Depends(require_token)], response_model=None,
              responses={200: {"model": RewardResponse}, **error_responses}, openapi_extra=body_schema("RewardRequest"),
              summary="Critique images (t2i) or edits and return per-dimension scores and rewards")
    async def reward(request: Request) -> Response:
        data = await read_json(request, "reward")
        precheck(data, "reward", 1)
        body: RewardRequest = validate(RewardRequest, data, "reward")
        del data
        only = scores_only if body.scores_only is None else body.scores_only
        n = len(body.items)
        prompts = [it.prompt for it in body.items]
        ids = [it.id for it in body.items]
        tasks = ["edit" if it.source else "t2i" for it in body.items]
        item_errors: dict[int, str] = {}
        for i, prompt in enumerate(prompts):
            problem = text_problem(prompt, f"items[{i}].prompt")
            if problem:
                item_errors[i] = problem
        wires = [w for i, it in enumerate(body.items) for w in wire_images(i, [("image", it.image)], it.source)]
        del body  # the wire strings now live only in `wires`, which drops them as they are read
        await prepare_all("reward", wires, item_errors)
        per_item: list[list[_WireImage]] = [[] for _ in range(n)]
        for w in wires:
            per_item[w.item].append(w)

        def call(i: int) -> Awaitable[Any]:
            def fail(kind: str, message: str) -> Any:
                return failed_critique(tasks[i], kind, message, id=ids[i])  # type: ignore[arg-type]

            async def run() -> Any:
                if i in item_errors:
                    return fail("input", item_errors[i])
                image, *srcs = [w.prepared for w in per_item[i]]
                return await rm.acritique(prompts[i], image, srcs or None, id=ids[i], scores_only=only)

            return judged("reward", run, fail)

        results = await in_flight(n, asyncio.gather(*(call(i) for i in range(n))))
        return _json_response({"results": results})

    @app.post("/v1/compare", dependencies=[Depends(require_token)], response_model=None,
              responses={200: {"model": CompareResponse}, **error_responses},
              openapi_extra=body_schema("CompareRequest"), summary="Compare two images (or two edits of a source)")
    async def compare(request: Request) -> Response:
        data = await read_json(request, "compare")
        precheck(data, "compare", 2)
        body: CompareRequest = validate(CompareRequest, data, "compare")
        del data
        n = len(body.items)
        prompts = [it.prompt for it in body.items]
        ids = [it.id for it in body.items]
        tasks = ["edit" if it.source else "t2i" for it in body.items]
        mode, swap, tie_tolerance = body.mode, body.swap, body.tie_tolerance
        item_errors: dict[int, str] = {}
        for i, prompt in enumerate(prompts):
            problem = text_problem(prompt, f"items[{i}].prompt")
            if problem:
                item_errors[i] = problem
        wires = [w for i, it in enumerate(body.items)
                 for w in wire_images(i, [("image_a", it.image_a), ("image_b", it.image_b)], it.source)]
        del body
        await prepare_all("compare", wires, item_errors)
        per_item: list[list[_WireImage]] = [[] for _ in range(n)]
        for w in wires:
            per_item[w.item].append(w)

        def call(i: int) -> Awaitable[Any]:
            def fail(kind: str, message: str) -> Any:
                return failed_compare(tasks[i], kind, message, id=ids[i])  # type: ignore[arg-type]

            async def run() -> Any:
                if i in item_errors:
                    return fail("input", item_errors[i])
                a, b, *srcs = [w.prepared for w in per_item[i]]
                return await rm.acompare(prompts[i], a, b, srcs or None, mode=mode, swap=swap,
                                         tie_tolerance=tie_tolerance, id=ids[i])

            return judged("compare", run, fail)

        results = await in_flight(n, asyncio.gather(*(call(i) for i in range(n))))
        return _json_response({"results": results})

    @app.get("/healthz", response_model=HealthResponse, summary="Liveness, model and limits (no token needed)")
    async def healthz() -> HealthResponse:
        described = rm.describe() if hasattr(rm, "describe") else {}
        # Only what a client needs; backend URLs and keys stay private.
        model = {k: described[k] for k in ("backend", "model", "aggregation", "templates") if k in described}
        return HealthResponse(version=__version__, model=model, limits=limits.public(),
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
