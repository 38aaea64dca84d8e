"""An append-only, keyed JSONL log that survives ``kill -9`` and scales to millions of rows.

Like :class:`rationalrewards.io.ResumableJsonl`, but the rows stay on disk: only an index
``key -> (offset, length, done)`` is held in memory, so a 100k-pair run (600k rationales of a
few KB each) does not need gigabytes of RAM to resume.

Durability: every row is written and flushed to the OS as it finishes, so killing the process
loses nothing already appended; a torn last line (killed mid-write) is cut off on reopen.
``fsync`` runs at most every ``fsync_every_s`` seconds and on close/finalize (power loss may cost
the last second; a process kill costs nothing).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..io import dumps_line

IsDone = Callable[[dict[str, Any]], bool]


class RowLog:
    """Rows keyed by ``row[key]``; a later done row replaces an earlier one for its key."""

    def __init__(self, path: str | Path, *, key: str = "key", is_done: IsDone | None = None,
                 fsync_every_s: float = 1.0, tag: str | None = None):
        self.path = Path(path)
        self.key = key
        # One small field per row kept in memory (e.g. the request digest), so deciding what to
        # redo does not read every row back from disk.
        self.tag = tag
        self._tags: dict[str, Any] = {}
        self.is_done = is_done or (lambda row: bool(row.get("ok")))
        self.fsync_every_s = fsync_every_s
        # key -> (offset, length, done)
        self._index: dict[str, tuple[int, int, bool]] = {}
        self.torn = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._scan()
        self._fh = self.path.open("ab")
        self._last_sync = time.monotonic()

    # -- opening --------------------------------------------------------------------------------
    def _scan(self) -> None:
        if not self.path.exists():
            return
        good_end = 0
        with self.path.open("rb") as fh:
            offset = 0
            for line in fh:
                length = len(line)
                if not line.endswith(b"\n"):
                    self.torn += 1  # killed mid-write: the rest of the file is this partial line
                    break
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    self.torn += 1
                    offset += length
                    good_end = offset
                    continue
                if isinstance(row, dict) and row.get(self.key) is not None:
                    self._record(str(row[self.key]), offset, length, self.is_done(row), row)
                offset += length
                good_end = offset
        if good_end < self.path.stat().st_size:
            with self.path.open("r+b") as fh:
                fh.truncate(good_end)

    def _record(self, key: str, offset: int, length: int, done: bool, row: dict[str, Any]) -> None:
        prev = self._index.get(key)
        # A done row wins over any failed one; among equals the latest wins.
        if prev is None or done or not prev[2]:
            self._index[key] = (offset, length, done)
            if self.tag is not None:
                self._tags[key] = row.get(self.tag)

    # -- access -----------------------------------------------------------------------------------
    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def keys(self) -> Iterable[str]:
        return self._index.keys()

    def is_key_done(self, key: str) -> bool:
        entry = self._index.get(key)
        return bool(entry and entry[2])

    def tag_of(self, key: str) -> Any:
        """The ``tag`` field of the row that counts for ``key`` (None if absent)."""
        return self._tags.get(key)

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._index.get(key)
        if entry is None:
            return None
        self._fh.flush()
        with self.path.open("rb") as fh:
            fh.seek(entry[0])
            return json.loads(fh.read(entry[1]))

    def read_many(self, keys: Iterable[str]) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """(key, row or None) for each key, with one open file handle."""
        self._fh.flush()
        with self.path.open("rb") as fh:
            for k in keys:
                entry = self._index.get(k)
                if entry is None:
                    yield k, None
                    continue
                fh.seek(entry[0])
                yield k, json.loads(fh.read(entry[1]))

    # -- writing ----------------------------------------------------------------------------------
    def append(self, row: dict[str, Any]) -> None:
        data = (dumps_line(row) + "\n").encode("utf-8")
        offset = self._fh.tell()
        self._fh.write(data)
        self._fh.flush()
        now = time.monotonic()
        if now - self._last_sync >= self.fsync_every_s:
            os.fsync(self._fh.fileno())
            self._last_sync = now
        if row.get(self.key) is not None:
            self._record(str(row[self.key]), offset, len(data), self.is_done(row), row)

    def sync(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def finalize(self, order: Iterable[str], *, keep_others: bool = True) -> int:
        """Rewrite the file atomically with one row per key: ``order`` first, then (if
        ``keep_others``) the remaining keys in their original order. Returns the row count."""
        self.sync()
        ordered = [k for k in dict.fromkeys(order) if k in self._index]
        if keep_others:
            listed = set(ordered)
            rest = sorted((k for k in self._index if k not in listed), key=lambda k: self._index[k][0])
            ordered += rest
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        new_index: dict[str, tuple[int, int, bool]] = {}
        with self.path.open("rb") as src, tmp.open("wb") as dst:
            for k in ordered:
                offset, length, done = self._index[k]
                src.seek(offset)
                data = src.read(length)
                new_index[k] = (dst.tell(), length, done)
                dst.write(data)
            dst.flush()
            os.fsync(dst.fileno())
        self._fh.close()
        os.replace(tmp, self.path)
        self._index = new_index
        self._fh = self.path.open("ab")
        return len(ordered)

    def close(self) -> None:
        if not self._fh.closed:
            self.sync()
            self._fh.close()

    def __enter__(self) -> RowLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Stream rows into ``path`` through a temporary file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    n = 0
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(dumps_line(row) + "\n")
                n += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file we wrote (missing file = no rows)."""
    p = Path(path)
    if not p.exists():
        return
    with p.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
