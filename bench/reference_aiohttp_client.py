"""The reference client for ``bench_http_client.py``: what a user would write by hand.

One ``aiohttp.ClientSession`` per request (so one fresh TCP connection per request), the whole
request body through ``json.dumps``, a semaphore for concurrency, no retries. It is correct (a
non-200 answer or a transport error becomes a failed :class:`Generation` with the reason) and
nothing more; it is the plain client of the released code base that our ``OpenAIBackend`` is
measured against. It shares the message layout (``to_openai_messages``) with our client, so the
two differ only in how they talk HTTP.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from rationalrewards.backends.base import Backend, Generation, SamplingParams
from rationalrewards.backends.openai_http import to_openai_messages


class PlainAiohttpBackend(Backend):
    """Chat completions with one ``aiohttp.ClientSession`` per request and no retries."""

    name = "plain-aiohttp"

    def __init__(self, base_url: str, model: str, *, concurrency: int = 64, timeout: float = 300.0):
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        self.concurrency = concurrency
        self.timeout = timeout
        self._sem: asyncio.Semaphore | None = None

    async def agenerate(self, messages: list[dict[str, Any]], params: SamplingParams) -> Generation:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        start = time.perf_counter()
        payload: dict[str, Any] = {
            "model": self.model_name,
            "messages": to_openai_messages(messages),
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
        }
        if params.stop:
            payload["stop"] = list(params.stop)
        async with self._sem:
            try:
                timeout = aiohttp.ClientTimeout(total=self.timeout)
                async with aiohttp.ClientSession(timeout=timeout) as session, \
                        session.post(f"{self.base_url}/chat/completions", json=payload) as resp:
                    if resp.status != 200:
                        detail = (await resp.text())[:300]
                        return Generation(text=None, error=f"HTTP {resp.status}: {detail}",
                                          latency_s=time.perf_counter() - start)
                    data = await resp.json()
                choice = data["choices"][0]
                usage = data.get("usage") or {}
                return Generation(
                    text=choice["message"].get("content") or "",
                    finish_reason=choice.get("finish_reason"),
                    prompt_tokens=int(usage.get("prompt_tokens") or 0),
                    completion_tokens=int(usage.get("completion_tokens") or 0),
                    latency_s=time.perf_counter() - start,
                )
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, IndexError) as exc:
                return Generation(text=None, error=f"{type(exc).__name__}: {exc}",
                                  latency_s=time.perf_counter() - start)
