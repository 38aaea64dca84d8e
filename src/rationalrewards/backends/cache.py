"""On-disk response cache (SQLite), keyed by model, messages (images by content) and sampling.

Only successful generations are stored: a failure is always retried on the next run.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from .base import Backend, Generation, SamplingParams, request_key


class ResponseCache:
    def __init__(self, path: str | Path):
        path = Path(path)
        if path.suffix != ".sqlite":
            path.mkdir(parents=True, exist_ok=True)
            path = path / "responses.sqlite"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, text TEXT,"
            " finish_reason TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, created REAL)"
        )
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Generation | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT text, finish_reason, prompt_tokens, completion_tokens FROM responses WHERE key=?",
                (key,),
            ).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return Generation(text=row[0], finish_reason=row[1], prompt_tokens=row[2], completion_tokens=row[3], cached=True)

    def put(self, key: str, model: str, gen: Generation) -> None:
        if not gen.ok:
            return
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, model, gen.text, gen.finish_reason, gen.prompt_tokens, gen.completion_tokens, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class CachedBackend(Backend):
    """Wraps any backend with a :class:`ResponseCache`."""

    def __init__(self, inner: Backend, cache: ResponseCache | str | Path):
        self.inner = inner
        self.cache = cache if isinstance(cache, ResponseCache) else ResponseCache(cache)
        self.name = inner.name
        self.model_name = inner.model_name

    async def agenerate(self, messages: list[dict[str, Any]], params: SamplingParams) -> Generation:
        if not self.inner.model_name:
            # The key must name the model; a server whose model is discovered is asked first.
            await self.inner.aready(30.0)
        key = request_key(self.inner.model_name, messages, params)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        gen = await self.inner.agenerate(messages, params)
        self.model_name = self.inner.model_name
        self.cache.put(key, self.inner.model_name, gen)
        return gen

    async def aready(self, timeout: float = 60.0) -> bool:
        ok = await self.inner.aready(timeout)
        self.model_name = self.inner.model_name
        return ok

    async def aclose(self) -> None:
        await self.inner.aclose()

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "cache": str(self.cache.path)}
