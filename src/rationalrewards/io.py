"""Resumable JSONL outputs and JSONL inputs.

A batch job appends one JSON line per finished item (flushed and fsynced), so a killed run loses
at most the line being written. Restarted with the same output, the job keeps the finished lines,
drops failed ones (they are retried) and any torn last line, and skips finished ids. At the end
the file is rewritten atomically in input order, one line per id.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class InputFileError(ValueError):
    """A JSONL/Parquet input is missing, unreadable or lacks a required column."""


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp creates 0600 files; give results the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path, *, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Read a JSONL input; raises :class:`InputFileError` naming the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"input file not found: {path}")
    rows = []
    need = tuple(required)
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputFileError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise InputFileError(f"{path}:{lineno}: expected a JSON object")
            missing = [k for k in need if row.get(k) in (None, "")]
            if missing:
                raise InputFileError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
            row.setdefault("_line", lineno)
            rows.append(row)
    return rows


def assign_ids(rows: list[dict[str, Any]], path: str | Path) -> list[dict[str, Any]]:
    """Give id-less rows their line number as id; refuse duplicate ids (resume would merge them)."""
    seen: dict[str, int] = {}
    for row in rows:
        if row.get("id") in (None, ""):
            row["id"] = f"line-{row['_line']}"
        row["id"] = str(row["id"])
        if row["id"] in seen:
            raise InputFileError(f"{path}:{row['_line']}: duplicate id {row['id']!r} (first on line {seen[row['id']]})")
        seen[row["id"]] = row["_line"]
    return rows


def iter_keyed_rows(path: str | Path, *, key: str = "id") -> Iterator[dict[str, Any] | None]:
    """The lines of a JSONL results file in order: each row that is an object carrying ``key``,
    and None for every other line (torn by a kill, not an object, no key), so callers can count
    them. A missing file has no lines."""
    path = Path(path)
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                yield None
                continue
            yield row if isinstance(row, dict) and row.get(key) is not None else None


def latest_rows(path: str | Path, *, key: str = "id", is_done: Any = None) -> dict[str, dict[str, Any]]:
    """The latest row per ``key`` of a JSONL results file; a finished row is never replaced by a
    later unfinished one. Lines torn by a kill are skipped."""
    done = is_done or (lambda row: bool(row.get("ok")))
    rows: dict[str, dict[str, Any]] = {}
    for row in iter_keyed_rows(path, key=key):
        if row is None:
            continue
        rid = str(row[key])
        if rid not in rows or done(row) or not done(rows[rid]):
            rows[rid] = row
    return rows


class ResumableJsonl:
    """Append-only result file keyed by ``id``.

    ``done`` holds the ids whose saved line satisfies ``is_done`` (default: ``ok`` is true);
    other saved lines are dropped on open so the caller retries them.
    """

    def __init__(self, path: str | Path, *, key: str = "id", is_done: Any = None):
        self.path = Path(path)
        self.key = key
        self.is_done = is_done or (lambda row: bool(row.get("ok")))
        self.rows: dict[str, dict[str, Any]] = {}
        self.dropped = 0
        if self.path.exists():
            for row in iter_keyed_rows(self.path, key=key):
                if row is not None and self.is_done(row):
                    self.rows[str(row[key])] = row
                else:
                    self.dropped += 1  # failed, or a line torn by a kill
            # Rewrite without the failed / torn lines so appends start from a clean file.
            self._rewrite(list(self.rows.values()))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    @property
    def done(self) -> set[str]:
        """Ids whose latest saved row is finished (failed rows written this run are not)."""
        return {rid for rid, row in self.rows.items() if self.is_done(row)}

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def append(self, row: dict[str, Any]) -> None:
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        if row.get(self.key) is not None:
            rid = str(row[self.key])
            if self.is_done(row) or rid not in self.rows:
                self.rows[rid] = row

    def finalize(self, order: list[str] | None = None) -> list[dict[str, Any]]:
        """Rewrite the file with one line per id, in ``order`` (then any others)."""
        self._fh.close()
        latest = latest_rows(self.path, key=self.key, is_done=self.is_done)
        ordered = [latest.pop(i) for i in (order or []) if i in latest] + list(latest.values())
        self._rewrite(ordered)
        return ordered

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows.values())
