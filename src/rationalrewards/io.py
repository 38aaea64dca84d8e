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
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class InputFileError(ValueError):
    """A JSONL/Parquet input is missing, unreadable or lacks a required column."""


@dataclass(frozen=True)
class LineProblem:
    """One input line that could not be used; the rest of the file still is.

    ``id`` is the line's own id when the line was readable enough to carry one (so its failure
    can be reported under that id); ``message`` names the file, the line and what was wrong.
    """

    line: int
    message: str
    id: str | None = None


def dumps_line(obj: Any) -> str:
    """One JSON line, readable (non-ASCII kept as is) wherever UTF-8 can hold it.

    A string with a lone surrogate (valid JSON via a ``\\ud800`` escape, but not encodable as
    UTF-8) would make the write fail and lose the batch; such a line is written with ASCII
    escapes instead, which reads back to exactly the same value.
    """
    text = json.dumps(obj, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=True)
    return text


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
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate somewhere: escape rather than fail the write
        text = json.dumps(obj, indent=2, ensure_ascii=True)
    atomic_write_text(path, text + "\n")


_BOM = b"\xef\xbb\xbf"


def _row_id(row: dict[str, Any]) -> str | None:
    value = row.get("id")
    if value in (None, "") or isinstance(value, (dict, list, bool)):
        return None
    return str(value)


def read_jsonl(
    path: str | Path,
    *,
    required: Iterable[str] = (),
    problems: list[LineProblem] | None = None,
) -> list[dict[str, Any]]:
    """Read a JSONL input: one JSON object per line, blank lines skipped, a UTF-8 BOM accepted.

    A line that is not UTF-8, not JSON, not an object or lacks a ``required`` field is a
    problem naming the file, line and field. With a ``problems`` list the problem is appended
    there and reading goes on (a batch runs every other line); without one the first problem
    raises :class:`InputFileError`. A missing or unreadable file always raises.
    """
    path = Path(path)
    if path.is_dir():
        raise InputFileError(f"input is a folder, not a JSONL file: {path}")
    if not path.is_file():
        raise InputFileError(f"input file not found: {path}")
    rows = []
    need = tuple(required)

    def problem(lineno: int, what: str, row_id: str | None = None) -> None:
        found = LineProblem(lineno, f"{path}:{lineno}: {what}", row_id)
        if problems is None:
            raise InputFileError(found.message)
        problems.append(found)

    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]  # editors on Windows write one; it is not part of the data
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problem(lineno, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problem(lineno, f"not valid JSON ({exc.msg})")
                continue
            except RecursionError:
                problem(lineno, "not valid JSON (nested too deeply)")
                continue
            if not isinstance(row, dict):
                problem(lineno, f"expected a JSON object, got {type(row).__name__}")
                continue
            missing = [k for k in need if row.get(k) in (None, "")]
            if missing:
                problem(lineno, f"missing field(s) {', '.join(missing)}", _row_id(row))
                continue
            row.setdefault("_line", lineno)
            rows.append(row)
    return rows


def assign_ids(
    rows: list[dict[str, Any]],
    path: str | Path,
    *,
    problems: list[LineProblem] | None = None,
) -> list[dict[str, Any]]:
    """Give id-less rows their line number as id; refuse duplicate ids (resume would merge them).

    With a ``problems`` list a later duplicate becomes a problem (its line is left out, the first
    line with that id is kept); without one it raises :class:`InputFileError`. Ids already held
    by problem lines count too, so a failure is never reported under another row's id.
    """
    earlier_problems: dict[str, int] = {}
    for p in sorted(problems or (), key=lambda p: p.line):
        if p.id is not None:
            earlier_problems.setdefault(p.id, p.line)
    seen: dict[str, int] = {}
    kept = []
    for row in rows:
        if row.get("id") in (None, ""):
            row["id"] = f"line-{row['_line']}"
        row["id"] = str(row["id"])
        first = seen.get(row["id"])
        if first is None and earlier_problems.get(row["id"], row["_line"]) < row["_line"]:
            first = earlier_problems[row["id"]]
        if first is not None:
            message = f"{path}:{row['_line']}: duplicate id {row['id']!r} (first on line {first})"
            if problems is None:
                raise InputFileError(message)
            problems.append(LineProblem(row["_line"], message))
            continue
        seen[row["id"]] = row["_line"]
        kept.append(row)
    return kept


def iter_keyed_rows(path: str | Path, *, key: str = "id") -> Iterator[dict[str, Any] | None]:
    """The lines of a JSONL results file in order: each row that is an object carrying ``key``,
    and None for every other line (torn by a kill, not an object, no key), so callers can count
    them. A missing file has no lines."""
    path = Path(path)
    if not path.is_file():
        return
    with path.open("rb") as fh:
        for raw in fh:
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
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


def settings_path_for(output: str | Path) -> Path:
    """Where :func:`pin_settings` keeps the settings of a results file: beside it."""
    output = Path(output)
    return output.with_name(output.name + ".settings.json")


def pin_settings(output: str | Path, settings: dict[str, Any], *, overwrite: bool = False) -> str | None:
    """Tie a resumable results file to the settings that shaped its rows.

    The settings are stored beside ``output`` (``<output>.settings.json``, written atomically).
    Resuming into an ``output`` whose stored settings differ would mix rows judged two ways in
    one file, so it raises :class:`InputFileError` listing each difference; ``overwrite=True``
    deletes ``output`` instead and starts over. Keys absent from the stored file are not
    compared (they were added by a later version). Returns a note for the log when ``output``
    holds rows but no readable settings (written by an older version): they are kept as is.
    """
    output = Path(output)
    sidecar = settings_path_for(output)
    current = json.loads(dumps_line(settings))  # compare in the form that is stored
    note = None
    if overwrite:
        output.unlink(missing_ok=True)
    elif output.is_file() and output.stat().st_size > 0:
        saved: Any = None
        if sidecar.is_file():
            try:
                saved = json.loads(sidecar.read_bytes().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                saved = None
        if isinstance(saved, dict):
            diffs = [f"{k}: saved {saved[k]!r}, now {v!r}" for k, v in current.items() if k in saved and saved[k] != v]
            if diffs:
                raise InputFileError(
                    f"{output} already holds results made with other settings ({'; '.join(diffs)}). Mixing them "
                    "would mix two ways of judging in one file: use another --output, or add --overwrite to start over."
                )
        else:
            note = (f"note: {output} has results but no readable {sidecar.name}; their settings cannot be checked, "
                    "so they are kept and these settings are recorded from now on")
    atomic_write_json(sidecar, current)
    return note


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
        atomic_write_text(self.path, "".join(dumps_line(r) + "\n" for r in rows))

    def append(self, row: dict[str, Any]) -> None:
        self._fh.write(dumps_line(row) + "\n")
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
