"""A real, local, OpenAI-compatible HTTP server that answers with scripted text.

Tests and benchmarks of every HTTP client in the package (reward-model client, evaluation, PARROT
teacher, reward server, refinement critic) talk to this server instead of a model. It speaks
just enough HTTP/1.1 over raw ``asyncio`` streams to be a faithful peer (keep-alive,
``Connection: close``, ``Content-Length`` and chunked request bodies) and, because it owns the
socket, it can also break the protocol on purpose: truncated bodies, dropped connections, resets,
malformed JSON, slow answers. A web framework would refuse to do most of that.

Typical use::

    from rationalrewards.testing.scripted_server import Reply, ScriptedServer, critique_text

    def judge(req):
        return critique_text("t2i", {"text_faithfulness": 3.5, "physical_quality": 3.0,
                                     "text_rendering": None})

    with ScriptedServer(judge, faults=[Reply(status=500), Reply(status=429,
                        headers={"Retry-After": "0"})]) as server:
        client = SomeClient(base_url=server.base_url)   # "http://127.0.0.1:PORT/v1"
        ...
        assert server.requests[-1].images()[0][0] == "image/png"

The server runs on its own event loop in a daemon thread and binds 127.0.0.1 only. Waiting
(``latency_s``, ``Reply.delay_s``) uses ``asyncio.sleep`` so thousands of concurrent requests
overlap; request bodies are read with ``readexactly``, parsed as JSON once, and images are only
decoded when a test asks for them, so a throughput benchmark measures the client, not this server.

Run ``python -m rationalrewards.testing.scripted_server --help`` for a stand-alone server (used by
the benchmarks to measure the server's CPU in its own process); ``python -m
rationalrewards.testing.judges --judge NAME`` serves one of the registered scripted judges.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import concurrent.futures
import contextlib
import http
import inspect
import itertools
import json as _json
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..critique.dimensions import BY_KEY, dimensions_for

__all__ = [
    "ImageResponder",
    "RecordedRequest",
    "Reply",
    "Responder",
    "ScriptedServer",
    "critique_text",
    "cycle_responder",
    "default_responder",
    "detect_mode",
    "detect_task",
    "judge_responder",
    "pairwise_text",
]

CHAT_PATH = "/v1/chat/completions"
IMAGES_PATH = "/v1/images/generations"
MODELS_PATH = "/v1/models"
HEALTH_PATH = "/health"

# Big enough that a 400 KB body arrives with few pause/resume cycles of the transport (the
# StreamReader pauses reading above 2 * limit), small enough to bound a runaway header block.
_STREAM_LIMIT = 1 << 20
# Refuse absurd bodies instead of buffering them: no test needs more than a few images.
_MAX_BODY_BYTES = 256 << 20
# start_server's default backlog (100) is below the benchmark's 128 simultaneous connects; a
# dropped SYN costs the client a 1 s retransmit and would ruin the latency measurements.
_BACKLOG = 2048


# --------------------------------------------------------------------------------------------
# JSON with big base64 payloads
# --------------------------------------------------------------------------------------------

_B64_MARK = b";base64,"
# Payloads shorter than this are left to the JSON scanner: cutting them out saves nothing.
_MIN_EXCISE = 4096
_PLACEHOLDER = "\x00rr-payload-{}\x00"


def _parse_json(body: bytes) -> Any:
    """``json.loads(body)``, but without running the JSON string scanner over data-URL payloads.

    A 512x512 PNG as base64 is ~300 KB, almost all of the body, and scanning it costs ~0.4-0.7 ms
    per request, the largest CPU cost of a benchmark request. Base64 needs no JSON unescaping,
    so each long ``"data:...;base64,<payload>"`` string is found with ``bytes.find`` (memchr
    speed), the small remainder is parsed, and the payloads are put back as ``str`` decoded
    straight from a memoryview (slicing first would add a large copy that costs as much as the
    scan). A span is only cut out when it is provably the whole tail of one JSON string: an
    unescaped quote directly before ``data:`` and no backslash up to the closing quote (a body
    with ``\\/``-escaped slashes simply takes the slow path). So the result equals
    ``json.loads(body)`` for every valid body. Raises ``ValueError`` for invalid JSON (the one
    defect it cannot see is a raw control character inside a cut-out payload).
    """
    pos = 0
    pieces: list[bytes] = []
    payloads: dict[str, str] = {}
    view = memoryview(body)
    last = 0
    while True:
        mark = body.find(_B64_MARK, pos)
        if mark < 0:
            break
        start = mark + len(_B64_MARK)
        end = body.find(b'"', start)
        if end < 0:
            break
        pos = end + 1
        if end - start < _MIN_EXCISE:
            continue
        quote = body.rfind(b'"', max(0, mark - 256), mark)
        if (
            quote < 1
            or body[quote - 1] == 0x5C  # a backslash: maybe an escaped quote inside some text
            or not body.startswith(b"data:", quote + 1)
            or body.find(b"\\", quote, end) >= 0
        ):
            continue
        try:
            payload = str(view[start:end], "ascii")
        except UnicodeDecodeError:
            continue
        token = _PLACEHOLDER.format(len(payloads))
        payloads[token] = payload
        pieces += [body[last:start], _json.dumps(token)[1:-1].encode()]
        last = end
    if not payloads:
        return _json.loads(body)
    pieces.append(body[last:])
    try:
        data = _json.loads(b"".join(pieces))
    except ValueError:
        return _json.loads(body)  # let the real parser name the real error
    return _restore(data, payloads)


def _restore(node: Any, payloads: dict[str, str]) -> Any:
    if isinstance(node, str):
        if "\x00" in node:
            for token, payload in payloads.items():
                if node.endswith(token):
                    return node[: -len(token)] + payload
        return node
    if isinstance(node, dict):
        return {k: _restore(v, payloads) for k, v in node.items()}
    if isinstance(node, list):
        return [_restore(v, payloads) for v in node]
    return node


# --------------------------------------------------------------------------------------------
# Recorded requests
# --------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One HTTP request as the server received it.

    ``headers`` keys are lower-cased (HTTP header names are case-insensitive, tests should not
    have to care). ``json`` is the parsed body, or ``None`` when the body is empty or not valid
    JSON. ``received_at`` is ``time.monotonic()`` when the request head arrived, so tests can
    measure spacing between retries. ``connection_id`` numbers TCP connections from 1 in accept
    order: equal ids mean the client reused a connection.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any | None
    received_at: float
    connection_id: int

    def _messages(self) -> list[dict[str, Any]]:
        if not isinstance(self.json, dict):
            return []
        messages = self.json.get("messages")
        if not isinstance(messages, list):
            return []
        return [m for m in messages if isinstance(m, dict)]

    def _parts(self, role: str | None) -> Iterable[dict[str, Any]]:
        for message in self._messages():
            if role is not None and message.get("role") != role:
                continue
            content = message.get("content")
            if isinstance(content, str):
                yield {"type": "text", "text": content}
            elif isinstance(content, list):
                yield from (p for p in content if isinstance(p, dict))

    def texts(self, role: str | None = None) -> list[str]:
        """All text parts of all messages (or of messages with ``role``), in order."""
        out: list[str] = []
        for part in self._parts(role):
            text = part.get("text")
            if part.get("type", "text") == "text" and isinstance(text, str):
                out.append(text)
        return out

    def text(self, role: str | None = None) -> str:
        """``texts(role)`` joined with newlines: handy for ``in`` checks."""
        return "\n".join(self.texts(role))

    def image_urls(self, role: str | None = None) -> list[str]:
        """The URL of every ``image_url`` part, in order, without decoding anything."""
        out: list[str] = []
        for part in self._parts(role):
            if part.get("type") != "image_url":
                continue
            ref = part.get("image_url")
            # Both the object form {"url": ...} and the bare-string form occur in the wild.
            url = ref.get("url") if isinstance(ref, dict) else ref
            if isinstance(url, str):
                out.append(url)
        return out

    def images(self, role: str | None = None) -> list[tuple[str, bytes]]:
        """(mime, decoded bytes) of every ``image_url`` part holding a base64 ``data:`` URL.

        Decoding happens here, on demand, never while serving: a benchmark that records nothing
        pays nothing for images. Parts with a non-data URL are skipped; a malformed data URL
        raises ``ValueError`` (the client under test sent something broken).
        """
        out: list[tuple[str, bytes]] = []
        for url in self.image_urls(role):
            if not url.startswith("data:"):
                continue
            meta, sep, payload = url[5:].partition(",")
            if not sep or not meta.endswith(";base64"):
                raise ValueError(f"not a base64 data URL: {url[:60]!r}")
            mime = meta[: -len(";base64")] or "application/octet-stream"
            try:
                out.append((mime, base64.b64decode(payload, validate=True)))
            except binascii.Error as exc:
                raise ValueError(f"bad base64 in data URL: {exc}") from exc
        return out

    def count_images(self) -> int:
        """Number of ``image_url`` parts (cheap: nothing is decoded)."""
        return sum(1 for p in self._parts(None) if p.get("type") == "image_url")


# --------------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """What the server does with one request.

    The default is a normal 200 chat completion whose assistant text is ``content``. Non-2xx
    statuses without ``body`` get an OpenAI-style error JSON (``content`` becomes its message).
    The misbehaviours are exclusive, in this order of precedence: ``drop_connection`` (close
    without a byte of answer), ``reset_connection`` (TCP RST, the client sees ECONNRESET),
    ``truncate_body`` (head with the full ``Content-Length``, half the body, close).
    """

    content: str | None = None
    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    truncate_body: bool = False
    drop_connection: bool = False
    finish_reason: str = "stop"
    usage: dict[str, Any] | None = None
    reset_connection: bool = False


Responder = Callable[[RecordedRequest], "Reply | str | Awaitable[Reply | str]"]
"""Chat responder: a ``str`` means a normal 200 completion with that content. It runs on the
server's event loop, so it must be quick; it may be ``async`` (return an awaitable)."""

ImageResponder = Callable[[RecordedRequest], "Reply | bytes | Awaitable[Reply | bytes]"]
"""Image-generation responder: ``bytes`` (a PNG) becomes ``{"created", "data":[{"b64_json"}]}``."""


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class _BadRequest(Exception):
    """The request itself cannot be parsed as HTTP: answer 4xx and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Scripted"


def _error_body(status: int, message: str | None = None) -> bytes:
    err = {
        "message": message or _reason(status),
        "type": _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
        "param": None,
        "code": status,
    }
    return _json.dumps({"error": err}).encode()


def _apply_limits(content: str, request: Any, finish_reason: str) -> tuple[str, str]:
    """Honour ``stop`` and ``max_tokens`` the way a real server visibly would."""
    if not isinstance(request, dict):
        return content, finish_reason
    stop = request.get("stop")
    if isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list):
        stops = [s for s in stop if isinstance(s, str)]
    else:
        stops = []
    cut = min((i for i in (content.find(s) for s in stops if s) if i >= 0), default=-1)
    if cut >= 0:
        content, finish_reason = content[:cut], "stop"
    max_tokens = request.get("max_completion_tokens", request.get("max_tokens"))
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 0:
        # ~4 characters per token: enough for clients to observe truncation and "length".
        limit = max_tokens * 4
        if len(content) > limit:
            content, finish_reason = content[:limit], "length"
    return content, finish_reason


class ScriptedServer:
    """Local OpenAI-compatible server with scripted answers and injectable faults.

    ``responder`` decides each chat answer (default: :func:`default_responder`, a well-formed
    judge). ``faults`` is a queue of replies used, in order, for the first chat requests before
    the responder is consulted: ``faults=[Reply(status=500), Reply(status=429)]`` makes the first
    two calls fail and the third succeed. ``latency_s`` is added to every chat request.
    ``record=False`` keeps only counters (for benchmarks: recorded bodies would pin hundreds of
    MB). ``image_responder`` enables ``POST /v1/images/generations`` (404 otherwise).

    Endpoints: ``GET /v1/models``, ``GET /health``, ``POST /v1/chat/completions``,
    ``POST /v1/images/generations``. Everything else is a JSON 404 (or 405 on a wrong method).
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model_name: str = "scripted-judge",
        latency_s: float = 0.0,
        faults: list[Reply] | None = None,
        record: bool = True,
        image_responder: ImageResponder | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "localhost"):
            # A scripted server must never be reachable from outside the machine.
            raise ValueError(f"ScriptedServer binds loopback only, not {host!r}")
        self.host = "127.0.0.1"
        self._requested_port = port
        self.model_name = model_name
        self.latency_s = float(latency_s)
        self.record = record
        self._responder: Responder = responder or default_responder
        self._image_responder = image_responder
        self._lock = threading.Lock()
        self._faults: collections.deque[Reply] = collections.deque(faults or ())
        self._requests: list[RecordedRequest] = []
        self._errors: list[BaseException] = []
        self._connections_opened = 0
        self._active_connections = 0
        self._chat_requests = 0
        self._total_requests = 0
        self._chat_in_flight = 0
        self._max_chat_in_flight = 0
        self._completion_ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._stop_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._port: int | None = None
        # Only touched on the server loop.
        self._conn_tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> ScriptedServer:
        """Bind and start serving in a background thread; returns ``self`` once accepting."""
        if self._thread is not None:
            raise RuntimeError("ScriptedServer already started")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="ScriptedServer", daemon=True)
        self._thread.start()
        try:
            ready.result(timeout=30)
        except BaseException:
            self._thread.join(timeout=5)
            self._thread = None
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listening socket and every connection, then join the thread.

        Safe to call twice. In-flight requests (e.g. sleeping on ``delay_s``) are cancelled and
        their clients see the connection close. When this returns the port is free.
        """
        with self._lock:
            thread, loop = self._thread, self._loop
            if thread is None or loop is None:
                return
            # Only the first caller may stop the loop: a second loop.stop() landing while the
            # thread runs _shutdown() would abort the shutdown half-way.
            first = not self._stop_requested
            self._stop_requested = True
        if first:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError("ScriptedServer thread did not stop in time")
        with self._lock:
            if self._thread is thread:
                self._thread = None
                self._loop = None
                self._stop_requested = False

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(
                asyncio.start_server(
                    self._handle_connection,
                    self.host,
                    self._requested_port,
                    limit=_STREAM_LIMIT,
                    backlog=_BACKLOG,
                    reuse_address=True,
                )
            )
        except BaseException as exc:
            loop.close()
            ready.set_exception(exc)
            return
        self._server = server
        self._port = server.sockets[0].getsockname()[1]
        self._loop = loop
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(self._shutdown())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._conn_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    # ---------------------------------------------------------------- public state

    @property
    def port(self) -> int:
        """The bound port (only after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("ScriptedServer not started")
        return self._port

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: what OpenAI-style clients take as ``base_url``."""
        return f"{self.root_url}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of the recorded ``POST /v1/chat/completions`` requests, in arrival order."""
        with self._lock:
            return [r for r in self._requests if r.path == CHAT_PATH and r.method == "POST"]

    @property
    def all_requests(self) -> list[RecordedRequest]:
        """Snapshot of every recorded request (models, health, images, 404s included)."""
        with self._lock:
            return list(self._requests)

    @property
    def image_requests(self) -> list[RecordedRequest]:
        """Snapshot of the recorded ``POST /v1/images/generations`` requests."""
        with self._lock:
            return [r for r in self._requests if r.path == IMAGES_PATH and r.method == "POST"]

    @property
    def last_request(self) -> RecordedRequest:
        """The latest chat-completion request (``IndexError`` if none)."""
        return self.requests[-1]

    @property
    def chat_request_count(self) -> int:
        """Chat-completion requests received, counted even when ``record=False``."""
        return self._chat_requests

    @property
    def max_chat_in_flight(self) -> int:
        """Most chat-completion requests the server held at once (arrival to reply written)."""
        return self._max_chat_in_flight

    @property
    def request_count(self) -> int:
        """All HTTP requests received, counted even when ``record=False``."""
        return self._total_requests

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted so far: small when the client reuses connections."""
        return self._connections_opened

    @property
    def active_connections(self) -> int:
        """TCP connections currently open."""
        return self._active_connections

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by responders (each answered with a 500) or while serving a connection.

        Non-empty almost always means a bug in the test's responder: worth asserting empty.
        """
        with self._lock:
            return list(self._errors)

    @property
    def pending_faults(self) -> int:
        """Queued fault replies not used yet."""
        with self._lock:
            return len(self._faults)

    def queue_faults(self, *replies: Reply) -> None:
        """Append replies to the fault queue (used before the responder, in order)."""
        with self._lock:
            self._faults.extend(replies)

    def set_responder(self, responder: Responder | None) -> None:
        """Replace the chat responder (``None`` restores :func:`default_responder`)."""
        self._responder = responder or default_responder

    def set_image_responder(self, responder: ImageResponder | None) -> None:
        """Replace the image-generation responder (``None`` makes the endpoint 404 again)."""
        self._image_responder = responder

    def clear(self) -> None:
        """Forget recorded requests and errors (counters keep counting)."""
        with self._lock:
            self._requests.clear()
            self._errors.clear()

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``n`` chat requests were received; returns the recorded ones."""
        deadline = time.monotonic() + timeout
        while self._chat_requests < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"got {self._chat_requests} chat requests, expected {n}")
            time.sleep(0.005)
        return self.requests

    # ---------------------------------------------------------------- HTTP

    async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections_opened += 1
        self._active_connections += 1
        conn_id = self._connections_opened
        task = asyncio.current_task()
        if task is not None:
            self._conn_tasks.add(task)
        self._writers.add(writer)
        try:
            while await self._serve_one(reader, writer, conn_id):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError, OSError):
            # The peer went away or we are shutting down: nothing left to answer.
            pass
        except Exception as exc:
            # A bug here must not vanish into the loop's log: tests can assert on ``errors``.
            with self._lock:
                self._errors.append(exc)
        finally:
            self._active_connections -= 1
            self._writers.discard(writer)
            if task is not None:
                self._conn_tasks.discard(task)
            if not writer.transport.is_closing():
                writer.transport.close()

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[str, str, str, dict[str, str]] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # clean close between requests (or a half request: same thing to us)
        except asyncio.LimitOverrunError:
            raise _BadRequest(431, "request header block too large") from None
        lines = head[:-4].decode("latin-1").split("\r\n")
        request_line = lines[0]
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise _BadRequest(400, f"malformed request line {request_line[:80]!r}")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(400, f"malformed header line {line[:80]!r}")
            headers[name.lower()] = value.strip()
        return method, target, version, headers

    async def _read_body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size_line = await reader.readuntil(b"\r\n")
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _BadRequest(400, "malformed chunk size") from None
                if size == 0:
                    # Skip trailers up to the empty line.
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    return b"".join(chunks)
                total += size
                if total > _MAX_BODY_BYTES:
                    raise _BadRequest(413, "request body too large")
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
        raw_length = headers.get("content-length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            raise _BadRequest(400, f"bad Content-Length {raw_length!r}") from None
        if length < 0:
            raise _BadRequest(400, f"bad Content-Length {raw_length!r}")
        if length > _MAX_BODY_BYTES:
            raise _BadRequest(413, "request body too large")
        return await reader.readexactly(length) if length else b""

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn_id: int) -> bool:
        """Serve one request; returns whether the connection stays open for another."""
        try:
            head = await self._read_head(reader)
            if head is None:
                return False
            method, target, version, headers = head
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await self._read_body(reader, headers)
        except _BadRequest as bad:
            await self._send(writer, bad.status, _error_body(bad.status, bad.message), {}, keep_alive=False)
            return False
        received_at = time.monotonic()
        conn_header = headers.get("connection", "").lower()
        keep_alive = "close" not in conn_header if version == "HTTP/1.1" else "keep-alive" in conn_header
        path = target.split("?", 1)[0]

        parsed: Any | None = None
        json_ok = False
        if body:
            try:
                parsed = _parse_json(body)
                json_ok = True
            except (ValueError, UnicodeDecodeError):
                parsed = None
        rec = RecordedRequest(method, path, headers, body, parsed, received_at, conn_id)
        self._total_requests += 1
        if path == CHAT_PATH and method == "POST":
            self._chat_requests += 1
        if self.record:
            with self._lock:
                self._requests.append(rec)

        if path == CHAT_PATH:
            if method != "POST":
                return await self._send_reply(writer, Reply(status=405), rec, keep_alive, completion=False)
            # Counted from arrival to the reply being written, so a client's concurrency limit can
            # be checked by what the server saw rather than by timing.
            self._chat_in_flight += 1
            self._max_chat_in_flight = max(self._max_chat_in_flight, self._chat_in_flight)
            try:
                reply = self._pop_fault()
                if reply is None:
                    error = self._validate_chat(rec, json_ok)
                    reply = error if error is not None else await self._call_responder(self._responder, rec)
                delay = self.latency_s + reply.delay_s
                if delay > 0:
                    await asyncio.sleep(delay)
                return await self._send_reply(writer, reply, rec, keep_alive, completion=True)
            finally:
                self._chat_in_flight -= 1
        if path == IMAGES_PATH:
            if method != "POST":
                return await self._send_reply(writer, Reply(status=405), rec, keep_alive, completion=False)
            if self._image_responder is None:
                reply = Reply(status=404, content="image generation is not scripted on this server")
            elif not json_ok or not isinstance(parsed, dict):
                reply = Reply(status=400, content="request body must be a JSON object")
            else:
                reply = await self._call_image_responder(rec)
            if reply.delay_s > 0:
                await asyncio.sleep(reply.delay_s)
            return await self._send_reply(writer, reply, rec, keep_alive, completion=False)
        if path in (MODELS_PATH, HEALTH_PATH):
            if method != "GET":
                return await self._send_reply(writer, Reply(status=405), rec, keep_alive, completion=False)
            if path == HEALTH_PATH:
                payload: dict[str, Any] = {"status": "ok"}
            else:
                payload = {"object": "list", "data": [{"id": self.model_name, "object": "model",
                                                       "created": 0, "owned_by": "scripted"}]}
            return await self._send(writer, 200, _json.dumps(payload).encode(), {}, keep_alive)
        return await self._send_reply(
            writer, Reply(status=404, content=f"no route for {method} {path}"), rec, keep_alive, completion=False
        )

    def _pop_fault(self) -> Reply | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _validate_chat(self, rec: RecordedRequest, json_ok: bool) -> Reply | None:
        if not json_ok:
            return Reply(status=400, content="request body is not valid JSON")
        data = rec.json
        if not isinstance(data, dict):
            return Reply(status=400, content="request body must be a JSON object")
        if not isinstance(data.get("messages"), list) or not data["messages"]:
            return Reply(status=400, content="'messages' must be a non-empty list")
        if data.get("stream"):
            return Reply(status=400, content="stream=true is not supported by the scripted server")
        return None

    async def _call_responder(self, responder: Responder, rec: RecordedRequest) -> Reply:
        try:
            result = responder(rec)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            with self._lock:
                self._errors.append(exc)
            return Reply(status=500, content=f"responder raised {type(exc).__name__}: {exc}")
        if isinstance(result, str):
            return Reply(content=result)
        if isinstance(result, Reply):
            return result
        err = TypeError(f"responder returned {type(result).__name__}, expected str or Reply")
        with self._lock:
            self._errors.append(err)
        return Reply(status=500, content=str(err))

    async def _call_image_responder(self, rec: RecordedRequest) -> Reply:
        assert self._image_responder is not None
        try:
            result = self._image_responder(rec)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            with self._lock:
                self._errors.append(exc)
            return Reply(status=500, content=f"image responder raised {type(exc).__name__}: {exc}")
        if isinstance(result, (bytes, bytearray, memoryview)):
            payload = {"created": int(time.time()), "data": [{"b64_json": base64.b64encode(result).decode()}]}
            return Reply(body=_json.dumps(payload).encode())
        if isinstance(result, Reply):
            return result
        err = TypeError(f"image responder returned {type(result).__name__}, expected bytes or Reply")
        with self._lock:
            self._errors.append(err)
        return Reply(status=500, content=str(err))

    def _completion_body(self, reply: Reply, rec: RecordedRequest) -> bytes:
        content, finish_reason = _apply_limits(reply.content or "", rec.json, reply.finish_reason)
        usage = reply.usage
        if usage is None:
            # Rough but monotone counts: clients only need plausible, non-zero numbers.
            prompt_chars = sum(len(t) for t in rec.texts())
            prompt_tokens = prompt_chars // 4 + 256 * rec.count_images()
            completion_tokens = max(1, len(content) // 4) if content else 0
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        requested_model = rec.json.get("model") if isinstance(rec.json, dict) else None
        payload = {
            "id": f"chatcmpl-scripted-{next(self._completion_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": requested_model if isinstance(requested_model, str) else self.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }
        return _json.dumps(payload).encode()

    async def _send_reply(
        self, writer: asyncio.StreamWriter, reply: Reply, rec: RecordedRequest, keep_alive: bool, *, completion: bool
    ) -> bool:
        if reply.drop_connection:
            writer.transport.close()
            return False
        if reply.reset_connection:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # Linger 0 turns close() into an RST instead of a FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if reply.body is not None:
            body = reply.body
        elif reply.status >= 400:
            body = _error_body(reply.status, reply.content)
        elif completion:
            body = self._completion_body(reply, rec)
        else:
            body = _json.dumps({"content": reply.content}).encode() if reply.content is not None else b"{}"
        if any(k.lower() == "connection" and "close" in v.lower() for k, v in reply.headers.items()):
            keep_alive = False
        if reply.truncate_body:
            await self._send(writer, reply.status, body, reply.headers, keep_alive=False, body_bytes=len(body) // 2)
            writer.transport.close()
            return False
        return await self._send(writer, reply.status, body, reply.headers, keep_alive)

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        extra_headers: dict[str, str],
        keep_alive: bool,
        body_bytes: int | None = None,
    ) -> bool:
        """Write one response; ``body_bytes`` < len(body) sends a deliberately short body."""
        lower = {k.lower() for k in extra_headers}
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        if "content-type" not in lower:
            lines.append("Content-Type: application/json")
        # A caller-supplied Content-Length wins so tests can send a lying one on purpose.
        if "content-length" not in lower:
            lines.append(f"Content-Length: {len(body)}")
        if "connection" not in lower:
            lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
        lines.extend(f"{k}: {v}" for k, v in extra_headers.items())
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        writer.write(head + (body if body_bytes is None else body[:body_bytes]))
        await writer.drain()
        if not keep_alive:
            writer.transport.close()
        return keep_alive


# --------------------------------------------------------------------------------------------
# Ready-made judge text and responders
# --------------------------------------------------------------------------------------------

# Justifications by dimension and integer level (rounded score). Written for these tests; the
# wording only has to read like a critique, the structure is what clients parse.
_PROSE: dict[str, dict[int, str]] = {
    "text_faithfulness": {
        4: "Every element the request names is present, with the stated attributes, counts and spatial relations.",
        3: "The main subject and most attributes match the request; one secondary detail is missing or slightly off.",
        2: "The overall theme is recognisable, but several requested attributes are wrong or absent.",
        1: "The image largely ignores the request: the main subject or the key action is missing.",
    },
    "image_faithfulness": {
        4: "Everything the instruction did not ask to change is preserved: identity, layout, lighting and background.",
        3: "Untouched regions mostly match the source, with small shifts in colour or texture near the edited area.",
        2: "Noticeable unintended changes appear outside the edit, such as an altered face or a shifted background.",
        1: "The result barely resembles the source; large parts were redrawn although nothing asked for it.",
    },
    "physical_quality": {
        4: "Anatomy, perspective, lighting and shadows are coherent and no artefacts are visible.",
        3: "The image is plausible overall; minor artefacts such as a soft edge or an odd reflection remain.",
        2: "Clear flaws stand out: distorted hands or objects, inconsistent lighting or smeared textures.",
        1: "Severe artefacts dominate: broken anatomy, melted shapes or physically impossible structure.",
    },
    "text_rendering": {
        4: "The requested text is spelled correctly, legible and placed where it belongs.",
        3: "The text is readable with one small glyph error or a slightly awkward placement.",
        2: "The text is partly garbled: several letters are wrong or missing.",
        1: "The requested text is illegible or absent.",
    },
}
_NA_PROSE = "The request asks for no visible text, so this dimension does not apply."
_PAIR_FOCUS = {
    "text_faithfulness": "following the request",
    "image_faithfulness": "preserving the source image",
    "physical_quality": "physical and visual quality",
    "text_rendering": "rendering the requested text",
}
_ANALYSIS = {
    "t2i": (
        "The request describes a scene to generate. The points to check are the main subject, its "
        "attributes and count, the composition, and any text that must appear in the image."
    ),
    "edit": (
        "The instruction asks for a targeted change to the source image. The change must be applied "
        "as described while everything the instruction does not mention stays as it was."
    ),
}
DEFAULT_SUMMARY = "The scores above follow from the issues noted in each dimension."
DEFAULT_REFINEMENT_COMMENTS = (
    "State the missing details explicitly and fix the composition in words so the generator cannot drop them."
)


def _format_score(value: float | None) -> str:
    return "N/A" if value is None else str(float(value))


def _level(value: float) -> int:
    return min(4, max(1, round(value)))


def _task_scores(task: str, scores: dict[str, float | None], what: str) -> list[tuple[str, str, float | None]]:
    """(key, header, score) of the task's dimensions present in ``scores``, in output order.

    Keys of the other task's dimensions are ignored so one dict can script both tasks; a key that
    is no dimension at all is a typo and raises. A task dimension absent from ``scores`` is left
    out of the text on purpose: that is how tests script a truncated / incomplete answer.
    """
    unknown = sorted(set(scores) - set(BY_KEY))
    if unknown:
        raise ValueError(f"{what}: unknown dimension key(s) {unknown}; expected {sorted(BY_KEY)}")
    return [(d.key, d.header, scores[d.key]) for d in dimensions_for(task) if d.key in scores]


def critique_text(
    task: str,
    scores: dict[str, float | None],
    *,
    refined_request: str | None = "a refined request",
    summary: str = DEFAULT_SUMMARY,
    analysis: str | None = None,
    refinement_comments: str = DEFAULT_REFINEMENT_COMMENTS,
    think: bool = False,
) -> str:
    """A well-formed pointwise critique in the released format.

    ``scores`` maps dimension keys (``text_faithfulness``, ``image_faithfulness`` (edit only),
    ``physical_quality``, ``text_rendering``) to a float or ``None`` (written ``N/A``).
    ``refined_request=None`` ends the text at ``# Summary:`` (no refinement section), as when a
    stop string cut it. ``think=True`` prepends the empty ``<think>`` block the released
    checkpoints emit.
    """
    lines = ["# User Request Analysis", analysis or _ANALYSIS[task], "# Detailed Judgement"]
    for i, (key, header, value) in enumerate(_task_scores(task, scores, "critique_text"), start=1):
        prose = _NA_PROSE if value is None else _PROSE[key][_level(value)]
        lines += [f"{i}. {header}:", f"## Justification: {prose}", f"## Score: {_format_score(value)}"]
    lines.append(f"# Summary: {summary}")
    if refined_request is not None:
        lines += [
            "",
            "# User Request Refinement:",
            f"## Refinement Comments: {refinement_comments}",
            f"## Refined Request: {refined_request}",
        ]
    text = "\n".join(lines)
    return "<think>\n\n</think>\n\n" + text if think else text


def _winner_of(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "N/A"
    if a > b:
        return "Image A"
    if b > a:
        return "Image B"
    return "It's a tie"


def pairwise_text(
    task: str,
    scores_a: dict[str, float | None],
    scores_b: dict[str, float | None],
    *,
    summary: str = DEFAULT_SUMMARY,
    analysis: str | None = None,
    winners: dict[str, str] | None = None,
    think: bool = False,
) -> str:
    """A well-formed pairwise judgement: Score A / Score B / Winner per dimension.

    The per-dimension winner follows the scores (``Image A`` / ``Image B`` / ``It's a tie``;
    ``N/A`` when either side is N/A) unless ``winners`` overrides it per key, e.g. to script a
    self-contradicting judge. Ends at ``# Summary:`` like the released pairwise output. A
    dimension must appear in both dicts or in neither.
    """
    dims_a = _task_scores(task, scores_a, "pairwise_text scores_a")
    dims_b = {k: v for k, _, v in _task_scores(task, scores_b, "pairwise_text scores_b")}
    if {k for k, _, _ in dims_a} != set(dims_b):
        raise ValueError("pairwise_text: scores_a and scores_b must cover the same dimensions")
    lines = ["# User Request Analysis", analysis or _ANALYSIS[task], "# Detailed Judgement"]
    for i, (key, header, a) in enumerate(dims_a, start=1):
        b = dims_b[key]
        winner = (winners or {}).get(key) or _winner_of(a, b)
        if a is None or b is None:
            justification = _NA_PROSE
        else:
            if winner == "It's a tie":
                verdict = f"Both images are on par for {_PAIR_FOCUS[key]}."
            else:
                verdict = f"{winner} is stronger on {_PAIR_FOCUS[key]}."
            justification = f"{verdict} Image A: {_PROSE[key][_level(a)]} Image B: {_PROSE[key][_level(b)]}"
        lines += [
            f"{i}. {header}:",
            f"## Justification: {justification}",
            f"## Score A: {_format_score(a)}",
            f"## Score B: {_format_score(b)}",
            f"## Winner: {winner}",
        ]
    lines.append(f"# Summary: {summary}")
    text = "\n".join(lines)
    return "<think>\n\n</think>\n\n" + text if think else text


def detect_task(req: RecordedRequest) -> Literal["t2i", "edit"]:
    """``"edit"`` if the user text mentions a ``Source Image``, else ``"t2i"``."""
    return "edit" if "Source Image" in req.text("user") else "t2i"


def detect_mode(req: RecordedRequest) -> Literal["pairwise", "pointwise"]:
    """``"pairwise"`` if the user text mentions ``Image A``, else ``"pointwise"``."""
    return "pairwise" if "Image A" in req.text("user") else "pointwise"


DEFAULT_POINTWISE_SCORES: dict[str, float | None] = {
    "text_faithfulness": 3.5,
    "image_faithfulness": 3.2,
    "physical_quality": 3.0,
    "text_rendering": None,
}
DEFAULT_SCORES_A: dict[str, float | None] = {
    "text_faithfulness": 3.6,
    "image_faithfulness": 3.4,
    "physical_quality": 3.2,
    "text_rendering": None,
}
DEFAULT_SCORES_B: dict[str, float | None] = {
    "text_faithfulness": 2.4,
    "image_faithfulness": 2.8,
    "physical_quality": 2.9,
    "text_rendering": None,
}


def judge_responder(
    pointwise: dict[str, float | None] | Callable[[RecordedRequest], dict[str, float | None]] | None = None,
    pairwise: tuple[dict[str, float | None], dict[str, float | None]]
    | Callable[[RecordedRequest], tuple[dict[str, float | None], dict[str, float | None]]]
    | None = None,
    *,
    refined_request: str | None = "a refined request",
    think: bool = False,
) -> Responder:
    """A responder that answers like the released judge, choosing format by :func:`detect_mode`.

    ``pointwise`` / ``pairwise`` give the scores (or a function of the request returning them);
    defaults: pointwise 3.5 / 3.2 / 3.0 / N/A, pairwise A clearly better than B.
    """

    def respond(req: RecordedRequest) -> str:
        task = detect_task(req)
        if detect_mode(req) == "pairwise":
            pair = pairwise(req) if callable(pairwise) else pairwise
            a, b = pair or (DEFAULT_SCORES_A, DEFAULT_SCORES_B)
            return pairwise_text(task, a, b, think=think)
        scores = pointwise(req) if callable(pointwise) else pointwise
        return critique_text(task, scores or DEFAULT_POINTWISE_SCORES, refined_request=refined_request, think=think)

    return respond


default_responder: Responder = judge_responder()
"""Used when a server has no responder: well-formed pointwise or pairwise judge output."""


def cycle_responder(*replies: Reply | str) -> Responder:
    """Answer with ``replies`` in turn, wrapping around (thread-safe; deterministic order)."""
    if not replies:
        raise ValueError("cycle_responder needs at least one reply")
    it = itertools.cycle(replies)
    lock = threading.Lock()

    def respond(_req: RecordedRequest) -> Reply | str:
        with lock:
            return next(it)

    return respond


# --------------------------------------------------------------------------------------------
# Stand-alone process (benchmarks run the server in its own process to measure its CPU)
# --------------------------------------------------------------------------------------------


def arg_parser() -> argparse.ArgumentParser:
    """The stand-alone server's options (``rationalrewards.testing.judges`` adds ``--judge``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--model-name", default="scripted-judge")
    parser.add_argument("--no-record", action="store_true", help="keep only counters (benchmarks)")
    return parser


def serve_until_signalled(args: argparse.Namespace, responder: Responder | None = None) -> int:
    """Serve ``responder`` (default: the default judge) until SIGTERM/SIGINT; prints
    ``READY <base_url>`` when bound."""
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    with ScriptedServer(
        responder, port=args.port, latency_s=args.latency_s, model_name=args.model_name, record=not args.no_record
    ) as server:
        print(f"READY {server.base_url}", flush=True)
        while not done.wait(0.5):
            pass
        print(
            f"served {server.chat_request_count} chat requests over {server.connections_opened} connections",
            file=sys.stderr,
            flush=True,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Serve the default judge until SIGTERM/SIGINT; prints ``READY <base_url>`` when bound."""
    return serve_until_signalled(arg_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
