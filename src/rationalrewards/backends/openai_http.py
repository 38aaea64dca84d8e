"""OpenAI-compatible chat backend (vLLM, SGLang, ``transformers serve``, hosted APIs).

One ``aiohttp.ClientSession`` per event loop, shared by every request, whose connection pool is
bounded by the concurrency limit; retries with exponential backoff and full jitter on 429, 5xx,
timeouts, connection errors and broken bodies (``Retry-After`` honoured); several base URLs
balanced by in-flight count (one server per GPU is how users scale). Every failure after the last
retry is returned as a :class:`Generation` with an error.

aiohttp rather than httpx: under load httpx/httpcore spent ~1.3 ms of CPU per request (and a
single pool of 128 connections ~20 ms, scanning every connection per queued request), which made
the client, not the server, the bottleneck on small machines; see bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import atexit
import binascii
import datetime
import email.utils
import json
import os
import random
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from ..images import PreparedImage
from .base import Backend, Generation, SamplingParams

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class _RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _FatalError(Exception):
    pass


def to_openai_messages(
    messages: list[dict[str, Any]],
    image_detail: str | None = None,
    url_for: Callable[[PreparedImage], str] | None = None,
) -> list[dict[str, Any]]:
    """Internal messages -> OpenAI wire format (images as base64 data URLs with the right MIME)."""
    out = []
    for msg in messages:
        content = msg["content"]
        if isinstance(content, str):
            out.append({"role": msg["role"], "content": content})
            continue
        parts: list[dict[str, Any]] = []
        for part in content:
            if part["type"] == "text":
                parts.append({"type": "text", "text": part["text"]})
                continue
            img = part["image"]
            if not isinstance(img, PreparedImage):
                raise TypeError("image parts must hold PreparedImage objects; use rationalrewards.images.load_image")
            url: dict[str, Any] = {"url": url_for(img) if url_for else img.data_url()}
            if image_detail:
                url["detail"] = image_detail
            parts.append({"type": "image_url", "image_url": url})
        out.append({"role": msg["role"], "content": parts})
    return out


class OpenAIBackend(Backend):
    """Chat completions over HTTP.

    Args:
        base_url: one URL (``http://127.0.0.1:8000/v1``) or several; requests go to the URL
            with the fewest requests in flight, and a retry prefers another URL.
        model: served model name; ``None`` asks the first server's ``/models``.
        api_key: bearer token; defaults to ``$OPENAI_API_KEY`` (local servers need none).
        concurrency: requests in flight at once, over all URLs; also the bound on open
            connections.
        timeout: seconds per request attempt (connecting, sending and reading the answer).
        connect_timeout: seconds to open a connection (at most ``timeout``).
        max_retries: retries after the first attempt.
        backoff_base, backoff_max: exponential backoff with full jitter between attempts;
            a ``Retry-After`` answer is honoured up to ``backoff_max``.
        keepalive_timeout: seconds an idle connection is kept; below the 5 s that uvicorn
            (vLLM, SGLang, ``transformers serve``) allows, so a reused connection is rarely one
            the server is just closing.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str | None = None,
        api_key: str | None = None,
        *,
        concurrency: int = 64,
        timeout: float = 300.0,
        connect_timeout: float = 10.0,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        headers: dict[str, str] | None = None,
        image_detail: str | None = None,
        extra_body: dict[str, Any] | None = None,
        keepalive_timeout: float = 4.0,
    ):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("at least one base URL is needed")
        self.base_urls = [u.rstrip("/") for u in urls]
        for u in self.base_urls:
            parsed = URL(u)
            if parsed.scheme not in ("http", "https") or not parsed.host:
                raise ValueError(f"base URL must be http(s)://host[:port]/path, got {u!r}")
        self.model_name = model or ""
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.concurrency = max(1, int(concurrency))
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self.max_retries = max(0, int(max_retries))
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.headers = dict(headers or {})
        self.image_detail = image_detail
        self.extra_body = dict(extra_body or {})
        self.keepalive_timeout = keepalive_timeout
        self._inflight = dict.fromkeys(self.base_urls, 0)
        # Parsed once: building a yarl.URL from a string on every request costs CPU.
        self._chat_urls = {u: URL(f"{u}/chat/completions") for u in self.base_urls}
        # Placeholder for image URLs while the body is serialised; random so no text collides.
        self._token = f"rr-image-{uuid.uuid4().hex}-"
        # base64 of each image, kept while the image lives: a swapped or pointwise comparison
        # sends the same image twice, a retry resends it.
        self._b64: weakref.WeakKeyDictionary[PreparedImage, bytes] = weakref.WeakKeyDictionary()
        # One session per event loop (an aiohttp session belongs to the loop it was made on).
        self._sessions: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self.clients_created = 0
        self.requests_sent = 0

    # -- plumbing -----------------------------------------------------------------------------
    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._sessions.get(loop)
        if state is None or state.session.closed:
            self._forget_dead_loops()
            headers = {"Content-Type": "application/json", **self.headers}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            connector = aiohttp.TCPConnector(
                limit=self.concurrency, limit_per_host=0, keepalive_timeout=self.keepalive_timeout
            )
            session = aiohttp.ClientSession(
                connector=connector,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=self.connect_timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
                # Proxies from the environment are looked up once per base URL below instead
                # of on every request (trust_env reads the whole environment per request).
                trust_env=False,
            )
            state = _LoopState(session, asyncio.Semaphore(self.concurrency),
                               {u: _env_proxy(URL(u)) for u in self.base_urls})
            self._sessions[loop] = state
            self.clients_created += 1
            _OPEN_BACKENDS.add(self)
        return state

    def _forget_dead_loops(self) -> None:
        """Drop sessions whose event loop has closed (asyncio.run without aclose), so neither
        the loop nor the session is kept alive by this backend."""
        for loop in [lp for lp in self._sessions if lp.is_closed()]:
            session = self._sessions.pop(loop).session
            connector = session.connector
            session.detach()
            if connector is not None:
                # The loop is gone, so nothing can be awaited: marking the connector closed
                # stops aiohttp from logging "Unclosed connector"; the sockets close when freed.
                connector._close()

    def _close_at_exit(self) -> None:
        """Close what the user left open when the interpreter exits (a RewardModel used without
        ``close()``), so aiohttp does not print "Unclosed client session" on the way out."""
        for loop, state in list(self._sessions.items()):
            try:
                if loop.is_running() and not _runs_here(loop):
                    asyncio.run_coroutine_threadsafe(state.session.close(), loop).result(timeout=2)
                    continue
            except Exception:  # exiting anyway: fall back to the quiet close below
                pass
            connector = state.session.connector
            if connector is not None:
                connector._close()  # what aiohttp's own finaliser does, minus the complaint
        self._sessions.clear()

    def _pick_url(self, avoid: str | None) -> str:
        candidates = [u for u in self.base_urls if u != avoid] or self.base_urls
        low = min(self._inflight[u] for u in candidates)
        return random.choice([u for u in candidates if self._inflight[u] == low])

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = min(self.backoff_max, self.backoff_base * (2**attempt))
        delay = random.uniform(0, cap)  # full jitter: spreads a burst of retries out
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    async def _get_models(self, state: _LoopState, url: str, timeout: float) -> tuple[int, Any]:
        async with state.session.get(f"{url}/models", proxy=state.proxies[url],
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            raw = await resp.read()
            return resp.status, (json.loads(raw) if resp.status == 200 else None)

    async def _discover_model(self, state: _LoopState) -> None:
        if self.model_name:
            return
        last = "no answer"
        for url in self.base_urls:
            try:
                status, payload = await self._get_models(state, url, self.timeout)
                data = (payload or {}).get("data") or []
                if status == 200 and data:
                    self.model_name = str(data[0]["id"])
                    return
                last = f"{url}/models answered {status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, TypeError, AttributeError) as exc:
                last = f"{url}/models: {type(exc).__name__}: {exc}"
        raise _RetryableError(f"could not discover the served model name ({last}); pass --model")

    def _image_b64(self, img: PreparedImage) -> bytes:
        b64 = self._b64.get(img)
        if b64 is None:
            b64 = binascii.b2a_base64(img.data, newline=False)
            self._b64[img] = b64
        return b64

    def _body(self, messages: list[dict[str, Any]], params: SamplingParams) -> bytes:
        # Data URLs are hundreds of KB of base64, which is JSON-safe as is: serialise the small
        # rest of the body with placeholders and splice the base64 bytes in, instead of making
        # json scan every byte of every image (and of copying it through str twice).
        images: list[PreparedImage] = []

        def url_for(img: PreparedImage) -> str:
            images.append(img)
            return f"{self._token}{len(images) - 1}@"

        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": to_openai_messages(messages, self.image_detail, url_for),
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
        }
        if params.top_p is not None:
            body["top_p"] = params.top_p
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        body.update(self.extra_body)
        body.update(params.extra)
        text = json.dumps(body, ensure_ascii=False)
        if not images:
            return text.encode("utf-8")
        pieces = text.split(self._token)
        out = [pieces[0].encode("utf-8")]
        for piece in pieces[1:]:
            index, _, rest = piece.partition("@")
            img = images[int(index)]
            out.append(f"data:{img.mime};base64,".encode("ascii"))
            out.append(self._image_b64(img))
            out.append(rest.encode("utf-8"))
        return b"".join(out)

    async def _attempt(self, state: _LoopState, url: str, body: bytes) -> Generation:
        self._inflight[url] += 1
        self.requests_sent += 1
        try:
            async with state.session.post(self._chat_urls[url], data=body, proxy=state.proxies[url],
                                          allow_redirects=False) as resp:
                status = resp.status
                retry_after_header = resp.headers.get("Retry-After")
                raw = await resp.read()
        except asyncio.TimeoutError:
            raise _RetryableError(f"timeout after {self.timeout:g}s at {url}") from None
        except aiohttp.ClientPayloadError as exc:
            raise _RetryableError(f"response body cut short ({exc}) at {url}") from None
        except aiohttp.InvalidURL as exc:
            raise _FatalError(f"invalid URL {exc} for {url}") from None
        except aiohttp.ClientError as exc:
            raise _RetryableError(f"{type(exc).__name__}: {exc or 'connection failed'} at {url}") from None
        except OSError as exc:  # a socket error aiohttp did not wrap
            raise _RetryableError(f"{type(exc).__name__}: {exc} at {url}") from None
        finally:
            self._inflight[url] -= 1
        if status != 200:
            snippet = raw[:300].decode("utf-8", "replace")
            message = f"HTTP {status} from {url}: {snippet}"
            if status in RETRY_STATUS:
                raise _RetryableError(message, _parse_retry_after(retry_after_header))
            raise _FatalError(message)
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = choice["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            # A 200 whose body is cut or garbled is a transport fault; another try usually works.
            raise _RetryableError(f"malformed response body from {url}: {raw[:200]!r}") from None
        usage = data.get("usage") or {}
        return Generation(
            text=text if text is not None else "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )

    # -- public -------------------------------------------------------------------------------
    async def agenerate(self, messages: list[dict[str, Any]], params: SamplingParams) -> Generation:
        start = time.perf_counter()
        state = self._state()
        errors: list[str] = []
        url: str | None = None
        body: bytes | None = None
        async with state.sem:
            for attempt in range(self.max_retries + 1):
                try:
                    if not self.model_name:
                        await self._discover_model(state)
                    if body is None:  # the same bytes serve every attempt
                        body = self._body(messages, params)
                    url = self._pick_url(avoid=url if len(self.base_urls) > 1 else None)
                    gen = await self._attempt(state, url, body)
                    gen.latency_s = time.perf_counter() - start
                    gen.attempts = attempt + 1
                    return gen
                except _FatalError as exc:
                    errors.append(str(exc))
                    break
                except _RetryableError as exc:
                    errors.append(str(exc))
                    if attempt < self.max_retries:
                        await asyncio.sleep(self._backoff(attempt, exc.retry_after))
        tries = len(errors)
        return Generation(
            text=None,
            error=f"backend failed after {tries} attempt(s): {errors[-1]}",
            latency_s=time.perf_counter() - start,
            attempts=tries,
        )

    async def aready(self, timeout: float = 60.0) -> bool:
        """Poll every base URL's ``/models`` until all answer 200 (or the timeout passes)."""
        state = self._state()
        deadline = time.monotonic() + timeout
        pending = list(self.base_urls)
        while pending:
            for url in list(pending):
                try:
                    status, payload = await self._get_models(state, url, min(5.0, self.timeout))
                    if status == 200:
                        pending.remove(url)
                        if not self.model_name:
                            data = (payload or {}).get("data") or []
                            if data:
                                self.model_name = str(data[0]["id"])
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, AttributeError):
                    pass
            if not pending:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.25)
        return True

    async def aclose(self) -> None:
        """Close this event loop's session and its connections (sessions of closed loops are
        dropped too)."""
        state = self._sessions.pop(asyncio.get_running_loop(), None)
        self._forget_dead_loops()
        if state is not None:
            await state.session.close()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_name, "base_urls": self.base_urls}


_OPEN_BACKENDS: weakref.WeakSet[OpenAIBackend] = weakref.WeakSet()


@atexit.register
def _close_open_backends() -> None:
    for backend in list(_OPEN_BACKENDS):
        backend._close_at_exit()


def _runs_here(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class _LoopState:
    """What one event loop's requests share: the session (one connection pool bounded at
    ``concurrency``), the concurrency semaphore, and each base URL's proxy from the environment."""

    __slots__ = ("proxies", "sem", "session")

    def __init__(self, session: aiohttp.ClientSession, sem: asyncio.Semaphore, proxies: dict[str, URL | None]):
        self.session = session
        self.sem = sem
        self.proxies = proxies


def _env_proxy(url: URL) -> URL | None:
    """The proxy that ``HTTP(S)_PROXY`` / ``NO_PROXY`` name for ``url``, as httpx (the previous
    transport) and curl would use it; None for none."""
    try:
        proxy, _auth = get_env_proxy_for_url(url)
    except LookupError:
        return None
    return proxy


def _parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())
