"""A responder wrapper that lets kill-and-resume tests stop a run at a known point.

Killing a child process "after N rows" by polling its output races with the child: on a fast or
idle machine it may finish the batch between the poll and the kill. Holding every request after
the first ``n`` makes the child wait at a known place, so the kill always lands mid-run.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any


class HoldAfter:
    """Answer the first ``n`` chat requests with ``responder``; hold later ones until :meth:`release`."""

    def __init__(self, responder: Callable[[Any], Any], n: int) -> None:
        self.responder = responder
        self.n = n
        self._seen = 0
        self._lock = threading.Lock()
        self._released = threading.Event()

    async def __call__(self, req: Any) -> Any:
        with self._lock:
            self._seen += 1
            held = self._seen > self.n
        while held and not self._released.is_set():
            await asyncio.sleep(0.01)
        out = self.responder(req)
        return await out if inspect.isawaitable(out) else out

    @property
    def seen(self) -> int:
        return self._seen

    def wait_until_holding(self, timeout: float = 60.0) -> None:
        """Block until at least one request is being held (the child cannot get further)."""
        deadline = time.monotonic() + timeout
        while self._seen <= self.n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self._seen} requests arrived; expected more than {self.n}")
            time.sleep(0.02)

    def release(self) -> None:
        self._released.set()


def wait_for_lines(path: Any, n: int, timeout: float = 60.0) -> int:
    """Wait until ``path`` holds at least ``n`` complete lines; returns how many it holds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            count = path.read_bytes().count(b"\n")
        except FileNotFoundError:
            count = 0
        if count >= n:
            return count
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} has {count} lines after {timeout} s; expected {n}")
        time.sleep(0.02)


def saved_ok_rows(path: Any) -> int:
    """Complete, successful result rows in a JSONL output (a line torn by a kill does not count)."""
    import json

    count = 0
    for line in path.read_bytes().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("ok"):
            count += 1
    return count
