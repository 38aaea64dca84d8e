"""OpenAI-compatible chat backend (vLLM, SGLang, ``transformers serve``, hosted APIs).

One ``httpx.AsyncClient`` per event loop, shared by every request; a concurrency limit; retries
with exponential backoff and full jitter on 429, 5xx, timeouts, connection errors and broken
bodies; several base URLs balanced by in-flight count (one server per GPU is how users scale).
Every failure after the last retry is returned as a :class:`Generation` with an error.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import httpx

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


class _ClientPool:
    """A few ``httpx.AsyncClient`` shards shared by all requests of a loop; each request goes to
    the shard with the fewest requests in flight, so no shard queues while another idles."""

    def __init__(self, clients: list[httpx.AsyncClient]):
        self.clients = clients
        self.inflight = [0] * len(clients)

    def pick(self) -> httpx.AsyncClient:
        return self.clients[self.inflight.index(min(self.inflight))]

    async def post(self, url: str, body: bytes) -> tuple[httpx.Response, bytes]:
        i = self.inflight.index(min(self.inflight))
        self.inflight[i] += 1
        try:
            resp = await self.clients[i].post(url, content=body)
            return resp, await resp.aread()
        finally:
            self.inflight[i] -= 1

    @property
    def is_closed(self) -> bool:
        return any(c.is_closed for c in self.clients)

    async def aclose(self) -> None:
        for c in self.clients:
            await c.aclose()


class OpenAIBackend(Backend):
    """Chat completions over HTTP.

    Args:
        base_url: one URL (``http://127.0.0.1:8000/v1``) or several; requests go to the URL
            with the fewest requests in flight, and a retry prefers another URL.
        model: served model name; ``None`` asks the first server's ``/models``.
        api_key: bearer token; defaults to ``$OPENAI_API_KEY`` (local servers need none).
        concurrency: requests in flight at once, over all URLs.
        timeout: seconds per request attempt.
        max_retries: retries after the first attempt.
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
    ):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("at least one base URL is needed")
        self.base_urls = [u.rstrip("/") for u in urls]
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
        self._inflight = dict.fromkeys(self.base_urls, 0)
        # Placeholder for image URLs while the body is serialised; random so no text collides.
        self._token = f"rr-image-{uuid.uuid4().hex}-"
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ClientPool] = weakref.WeakKeyDictionary()
        self._sems: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
        self.clients_created = 0
        self.requests_sent = 0

    # -- plumbing -----------------------------------------------------------------------------
    # httpcore's pool scans every connection for every queued request, so one pool of 128
    # connections spends ~20 ms of CPU per request under load. Several small pools behind one
    # shared client object keep that cost flat as concurrency grows.
    CONNECTIONS_PER_POOL = 8

    def _client(self) -> tuple[_ClientPool, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        pool = self._clients.get(loop)
        if pool is None or pool.is_closed:
            headers = {"Content-Type": "application/json", **self.headers}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            shards = max(1, -(-self.concurrency // self.CONNECTIONS_PER_POOL))
            # One TLS context for all shards (building one costs ~50 ms).
            tls = ssl.create_default_context()
            per_shard = -(-self.concurrency // shards)
            pool = _ClientPool([
                httpx.AsyncClient(
                    headers=headers,
                    timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                    limits=httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard),
                    verify=tls,
                )
                for _ in range(shards)
            ])
            self._clients[loop] = pool
            self._sems[loop] = asyncio.Semaphore(self.concurrency)
            self.clients_created += 1
        return pool, self._sems[loop]

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

    async def _discover_model(self) -> None:
        if self.model_name:
            return
        client = self._client()[0].pick()
        last = "no answer"
        for url in self.base_urls:
            try:
                resp = await client.get(f"{url}/models")
                data = resp.json().get("data") or []
                if resp.status_code == 200 and data:
                    self.model_name = str(data[0]["id"])
                    return
                last = f"{url}/models answered {resp.status_code}"
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                last = f"{url}/models: {type(exc).__name__}: {exc}"
        raise _RetryableError(f"could not discover the served model name ({last}); pass --model")

    def _body(self, messages: list[dict[str, Any]], params: SamplingParams) -> bytes:
        # Data URLs are hundreds of KB of base64, which is JSON-safe as is: serialise the small
        # rest of the body with placeholders and splice the URLs in, instead of making json
        # scan every byte of every image.
        urls: list[str] = []

        def url_for(img: PreparedImage) -> str:
            urls.append(img.data_url())
            return f"{self._token}{len(urls) - 1}@"

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
        if not urls:
            return text.encode("utf-8")
        pieces = text.split(self._token)
        out = [pieces[0].encode("utf-8")]
        for piece in pieces[1:]:
            index, _, rest = piece.partition("@")
            out.append(urls[int(index)].encode("ascii"))
            out.append(rest.encode("utf-8"))
        return b"".join(out)

    async def _attempt(self, pool: _ClientPool, url: str, body: bytes) -> Generation:
        self._inflight[url] += 1
        self.requests_sent += 1
        try:
            resp, raw = await pool.post(f"{url}/chat/completions", body)
        except httpx.TimeoutException as exc:
            raise _RetryableError(f"timeout after {self.timeout:g}s ({type(exc).__name__}) at {url}") from None
        except httpx.HTTPError as exc:
            raise _RetryableError(f"{type(exc).__name__}: {exc or 'connection failed'} at {url}") from None
        finally:
            self._inflight[url] -= 1
        if resp.status_code != 200:
            snippet = raw[:300].decode("utf-8", "replace")
            message = f"HTTP {resp.status_code} from {url}: {snippet}"
            if resp.status_code in RETRY_STATUS:
                retry_after = None
                if "retry-after" in resp.headers:
                    try:
                        retry_after = float(resp.headers["retry-after"])
                    except ValueError:
                        retry_after = None
                raise _RetryableError(message, retry_after)
            raise _FatalError(message)
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = choice["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError):
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
        client, sem = self._client()
        errors: list[str] = []
        url: str | None = None
        async with sem:
            for attempt in range(self.max_retries + 1):
                try:
                    if not self.model_name:
                        await self._discover_model()
                    body = self._body(messages, params)
                    url = self._pick_url(avoid=url if len(self.base_urls) > 1 else None)
                    gen = await self._attempt(client, url, body)
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
        client = self._client()[0].pick()
        deadline = time.monotonic() + timeout
        pending = list(self.base_urls)
        while pending:
            for url in list(pending):
                try:
                    resp = await client.get(f"{url}/models", timeout=min(5.0, self.timeout))
                    if resp.status_code == 200:
                        pending.remove(url)
                        if not self.model_name:
                            data = resp.json().get("data") or []
                            if data:
                                self.model_name = str(data[0]["id"])
                except (httpx.HTTPError, ValueError):
                    pass
            if not pending:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.25)
        return True

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_name, "base_urls": self.base_urls}
