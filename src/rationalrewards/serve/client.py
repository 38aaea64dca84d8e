"""``RemoteReward``: the client of ``rationalrewards serve``.

    remote = RemoteReward("http://127.0.0.1:8080", token="secret")
    results = remote.critique_batch([("a red ball", pil_image, None)], scores_only=True)

    reward = RationalReward(remote, failure_policy="group-mean")   # the RL reward, over HTTP

Images are encoded on the client (downscaled to the judge's pixel cap first, so the wire
carries no more than the judge reads). A large batch is split into requests that fit the
server's limits (learned from ``/healthz``: bytes, images and pixels per request) and sent
concurrently. Transient failures (connection errors, timeouts, 429, 5xx) are retried with
backoff; what still fails comes back as results with ``ok=False`` and a reason, never as a low
score. A request the server refuses as too big is split and sent again; an item the server (or
this client) finds unusable fails alone with ``error_kind="input"`` while the others are judged.
A wrong token raises :class:`RemoteRewardError`: that is a configuration problem, not a
per-sample failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import weakref
from collections.abc import Sequence
from typing import Any

import httpx

from ..critique.aggregate import Aggregation, get_aggregation
from ..critique.schema import CritiqueResult, failed_critique
from ..images import DEFAULT_MAX_PIXELS, ImageInputError, PreparedImage, load_image
from .schemas import MAX_ID_CHARS, text_problem

RETRY_STATUS = {408, 429, 500, 502, 503, 504}
TOKEN_ENV = "RATIONALREWARDS_TOKEN"
# Used when /healthz cannot be read (an older server, or a proxy in front): the server defaults.
FALLBACK_LIMITS = {"max_body_bytes": 64 * 1024 * 1024, "max_images_per_request": 64,
                   "max_image_pixels": 16_000_000, "max_request_pixels": 64_000_000}
_JSON_OVERHEAD = 256  # bytes of JSON around one item's strings
# Refusals that depend on how many items shared the request: a smaller request may pass.
_SPLITTABLE = {"too_large", "too_many_items", "too_many_images", "too_many_pixels"}

Item = tuple[str, Any, Any, "str | None"]
# (index in the caller's batch, JSON item, images, encoded bytes, pixels)
_Wire = tuple[int, dict[str, Any], int, int, int]


class RemoteRewardError(RuntimeError):
    """The server refused us as a client (bad token), or answered something that is not the API."""


def _as_list(source: Any) -> list[Any]:
    if source is None:
        return []
    if isinstance(source, (list, tuple)):
        return list(source)
    return [source]


class RemoteReward:
    """Critiques from a ``rationalrewards serve`` instance.

    Args:
        url: the server root, e.g. ``http://127.0.0.1:8080`` (a trailing ``/v1`` is accepted).
        token: bearer token; default ``$RATIONALREWARDS_TOKEN``.
        timeout: seconds per HTTP request (a request carries many items; RL batches can take minutes).
        max_retries: retries after the first attempt on connection errors, timeouts, 429 and 5xx.
        concurrency: requests in flight at once when a batch is split.
        max_images_per_request / max_body_bytes: override the limits read from ``/healthz``.
        aggregation: used by :class:`~rationalrewards.rl.RationalReward` to turn scores into
            rewards (the server's own ``reward`` field is not trusted to match).
        max_pixels: images are downscaled to this before sending (the judge's training cap).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 300.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 10.0,
        concurrency: int = 8,
        max_images_per_request: int | None = None,
        max_body_bytes: int | None = None,
        aggregation: str | Aggregation | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        base = url.rstrip("/")
        if base.endswith("/v1"):
            base = base[: -len("/v1")]
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"reward server URL must start with http:// or https://, got {url!r}")
        self.url = base
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.concurrency = max(1, int(concurrency))
        self.max_images_per_request = max_images_per_request
        self.max_body_bytes = max_body_bytes
        self.aggregation = get_aggregation(aggregation)
        self.max_pixels = max_pixels
        self.requests_sent = 0
        self._limits: dict[str, int] | None = None
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary())
        self._loop: Any = None

    # -- plumbing -----------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            limits = httpx.Limits(max_connections=self.concurrency + 2, max_keepalive_connections=self.concurrency + 2)
            client = httpx.AsyncClient(timeout=self.timeout, limits=limits)
            self._clients[loop] = client
        return client

    def _run(self, coro: Any) -> Any:
        from ..critique.model import BackgroundLoop

        if self._loop is None:
            self._loop = BackgroundLoop()
        return self._loop.run(coro)

    async def ahealth(self) -> dict[str, Any]:
        """``GET /healthz`` (raises ``httpx.HTTPError`` when the server cannot be reached)."""
        r = await self._client().get(f"{self.url}/healthz", timeout=min(self.timeout, 30.0))
        r.raise_for_status()
        return r.json()

    def health(self) -> dict[str, Any]:
        return self._run(self.ahealth())

    async def _server_limits(self) -> dict[str, int]:
        if self._limits is None:
            try:
                limits = (await self.ahealth()).get("limits") or {}
            except (httpx.HTTPError, ValueError):
                limits = {}
            self._limits = {k: int(limits.get(k) or v) for k, v in FALLBACK_LIMITS.items()}
        return self._limits

    def _encode(self, image: Any, name: str) -> tuple[str, int]:
        """(data URL, pixels) of one image, downscaled to the judge's cap."""
        prepared = image if isinstance(image, PreparedImage) else None
        if prepared is None or (self.max_pixels and prepared.size[0] * prepared.size[1] > self.max_pixels):
            prepared = load_image(image, max_pixels=self.max_pixels, allow_base64=True, name=name)
        return prepared.data_url(), prepared.size[0] * prepared.size[1]

    # -- critiques ----------------------------------------------------------------------------
    async def acritique_items(self, items: Sequence[Item], *, scores_only: bool = True) -> list[CritiqueResult]:
        """Critique ``(prompt, image, source_or_None, id)`` items; results in input order."""
        n = len(items)
        results: list[CritiqueResult | None] = [None] * n
        wire: list[_Wire] = []

        def encode_all() -> None:
            for i, (prompt, image, source, id_) in enumerate(items):
                task = "edit" if _as_list(source) else "t2i"
                # Text the server could not read fails here, alone, instead of sinking its request.
                problem = (f"prompt must be text, got {type(prompt).__name__}" if not isinstance(prompt, str)
                           else text_problem(prompt, "prompt"))
                if problem is None and id_ is not None and not isinstance(id_, str):
                    problem = f"id must be text or None, got {type(id_).__name__}"
                if problem is None and id_ is not None and len(id_) > MAX_ID_CHARS:
                    problem = f"id is {len(id_)} characters long, over the server's limit of {MAX_ID_CHARS}"
                if problem:
                    results[i] = failed_critique(task, "input", problem, id=id_ if isinstance(id_, str) else None)  # type: ignore[arg-type]
                    continue
                try:
                    srcs = [self._encode(s, f"source[{k}]") for k, s in enumerate(_as_list(source))]
                    image_url, pixels = self._encode(image, "image")
                except ImageInputError as exc:
                    results[i] = failed_critique(task, "input", str(exc), id=id_)  # type: ignore[arg-type]
                    continue
                obj: dict[str, Any] = {"id": id_, "prompt": prompt, "image": image_url,
                                       "source": [url for url, _ in srcs] or None}
                # json.dumps: the size as sent (non-ASCII text is escaped on the wire).
                size = (sum(len(url) for url, _ in srcs) + len(image_url) + len(json.dumps(prompt))
                        + len(json.dumps(id_)) + _JSON_OVERHEAD)
                wire.append((i, obj, 1 + len(srcs), size, pixels + sum(p for _, p in srcs)))

        await asyncio.to_thread(encode_all)
        limits = await self._server_limits()
        max_images = self.max_images_per_request or limits["max_images_per_request"]
        max_body = int((self.max_body_bytes or limits["max_body_bytes"]) * 0.95)
        max_pixels = limits["max_request_pixels"]
        chunks: list[list[_Wire]] = []
        current: list[_Wire] = []
        images = size = pixels = 0
        for entry in wire:
            i, obj, k, s, p = entry
            if k > max_images or s > max_body or p > max_pixels:
                task = "edit" if obj["source"] else "t2i"
                results[i] = failed_critique(
                    task, "input", f"item alone ({k} images, ~{s} bytes, {p} pixels) exceeds the server's limits "
                                   f"({max_images} images, {max_body} bytes, {max_pixels} pixels per request)",
                    id=obj["id"])  # type: ignore[arg-type]
                continue
            if current and (images + k > max_images or size + s > max_body or pixels + p > max_pixels):
                chunks.append(current)
                current, images, size, pixels = [], 0, 0, 0
            current.append(entry)
            images += k
            size += s
            pixels += p
        if current:
            chunks.append(current)

        sem = asyncio.Semaphore(self.concurrency)

        async def send(chunk: list[_Wire]) -> None:
            async with sem:
                outs = await self._post_reward([obj for _, obj, *_ in chunk], scores_only)
            for (i, *_), res in zip(chunk, outs, strict=True):
                results[i] = res

        await asyncio.gather(*(send(c) for c in chunks))
        return results  # type: ignore[return-value]

    async def _post_reward(self, objs: list[dict[str, Any]], scores_only: bool) -> list[CritiqueResult]:
        """Results for ``objs``, however the server answers: a refusal that names one item fails
        that item and sends the others again; one that depends on the request's size splits it."""
        outs = await self._post_once(objs, scores_only)
        if isinstance(outs, list):
            return outs
        status, kind, message, details = outs
        named = sorted({d["item"] for d in details if isinstance(d, dict) and isinstance(d.get("item"), int)
                        and 0 <= d["item"] < len(objs)})
        if kind == "image_too_large" and named:
            results: list[CritiqueResult | None] = [None] * len(objs)
            for j in named:
                results[j] = _failed(objs[j], "input", f"reward server refused the image (HTTP {status}): {message}")
            rest = [j for j in range(len(objs)) if results[j] is None]
            if rest:
                for j, res in zip(rest, await self._post_reward([objs[j] for j in rest], scores_only), strict=True):
                    results[j] = res
            return results  # type: ignore[return-value]
        if kind in _SPLITTABLE and len(objs) > 1:
            half = len(objs) // 2
            first, second = await asyncio.gather(self._post_reward(objs[:half], scores_only),
                                                 self._post_reward(objs[half:], scores_only))
            return [*first, *second]
        return [_failed(o, "input", f"reward server rejected the request (HTTP {status}): {message}") for o in objs]

    async def _post_once(self, objs: list[dict[str, Any]], scores_only: bool
                         ) -> list[CritiqueResult] | tuple[int, str, str, list[Any]]:
        """One request with retries: the results, or a refusal ``(status, kind, message, details)``
        that asking again would not change (400, 413, 415, 422)."""
        def fail_all(kind: str, message: str) -> list[CritiqueResult]:
            return [_failed(o, kind, message) for o in objs]

        body = json.dumps({"items": objs, "scores_only": scores_only}).encode()
        client = self._client()
        last = "no attempt made"
        retry_after: float | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff(attempt, retry_after))
                retry_after = None
            try:
                self.requests_sent += 1
                r = await client.post(f"{self.url}/v1/reward", content=body, headers=self._headers())
            except httpx.TimeoutException:
                last = f"timeout after {self.timeout} s"
                continue
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if r.status_code == 200:
                return self._parse_results(r, objs, fail_all)
            message = _error_message(r)
            if r.status_code in (401, 403):
                raise RemoteRewardError(f"reward server {self.url} refused the request (HTTP {r.status_code}): "
                                        f"{message}; check the token (--token / ${TOKEN_ENV})")
            if r.status_code in RETRY_STATUS:
                last = f"HTTP {r.status_code}: {message}"
                retry_after = _retry_after(r)
                continue
            # 400 / 413 / 415 / 422: the request itself is wrong; asking it again will not help.
            kind, details = _error_kind_and_details(r)
            return r.status_code, kind, message, details
        return fail_all("backend", f"reward server {self.url} failed after {self.max_retries + 1} attempt(s): {last}")

    def _parse_results(self, r: httpx.Response, objs: list[dict[str, Any]], fail_all: Any) -> list[CritiqueResult]:
        try:
            payload = r.json()
            raw = payload["results"]
            if not isinstance(raw, list) or len(raw) != len(objs):
                raise ValueError(f"expected {len(objs)} results, got {len(raw) if isinstance(raw, list) else raw!r}")
            return [CritiqueResult.model_validate(x) for x in raw]
        except (ValueError, KeyError, TypeError) as exc:
            return fail_all("backend", f"reward server answered something that is not the API: {exc}")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.backoff_max, retry_after)
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))

    async def acritique(self, prompt: str, image: Any, source: Any = None, *, id: str | None = None,
                        scores_only: bool = False, **_: Any) -> CritiqueResult:
        """One critique (prefer :meth:`acritique_items` for batches: one request for many items)."""
        return (await self.acritique_items([(prompt, image, source, id)], scores_only=scores_only))[0]

    def critique(self, prompt: str, image: Any, source: Any = None, **kwargs: Any) -> CritiqueResult:
        return self._run(self.acritique(prompt, image, source, **kwargs))

    def critique_batch(self, items: Sequence[Item | tuple[str, Any, Any]], *, scores_only: bool = True) -> list[CritiqueResult]:
        """Synchronous :meth:`acritique_items`; items are ``(prompt, image, source[, id])``."""
        full = [tuple(x) + (None,) * (4 - len(x)) for x in items]
        return self._run(self.acritique_items(full, scores_only=scores_only))  # type: ignore[arg-type]

    # -- lifecycle ----------------------------------------------------------------------------
    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.run(self.aclose())
            self._loop.stop()
            self._loop = None

    def __enter__(self) -> RemoteReward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {"backend": "remote", "model": self.url, "aggregation": self.aggregation.name}


def _failed(obj: dict[str, Any], kind: str, message: str) -> CritiqueResult:
    return failed_critique("edit" if obj["source"] else "t2i", kind, message, id=obj["id"])  # type: ignore[arg-type]


def _error_kind_and_details(r: httpx.Response) -> tuple[str, list[Any]]:
    try:
        payload = r.json()
    except ValueError:
        return "", []
    if not isinstance(payload, dict):
        return "", []
    kind = payload.get("kind")
    details = payload.get("details")
    return (kind if isinstance(kind, str) else ""), (details if isinstance(details, list) else [])


def _error_message(r: httpx.Response) -> str:
    try:
        payload = r.json()
    except ValueError:
        return r.text[:300] or r.reason_phrase
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, str):
            return err
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
    return json.dumps(payload)[:300]


def _retry_after(r: httpx.Response) -> float | None:
    value = r.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
