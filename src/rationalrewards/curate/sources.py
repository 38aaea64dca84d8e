"""Datasets to curate: JSONL, Parquet, Hugging Face dataset folders, and image folders.

Every format becomes the same stream of :class:`Item` objects (id, prompt, image, source, extra
columns). Items are produced lazily: a Parquet file is read in record batches and a saved
``datasets`` folder is memory-mapped, so a million-row dataset never sits in memory at once. Only
the ids are collected up front (the resumable store and the final files are ordered by them, and
duplicates must be refused before a resume could merge two items).

A row whose own fields are unusable (empty prompt, no image, an image without a prompt in the
prompts file) still becomes an item, with ``problem`` set: the pipeline rejects it with that
reason instead of aborting the whole job. A column missing from the *whole* input is a usage
error and raises :class:`~rationalrewards.io.InputFileError` naming the column and the ones that
exist.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import InputFileError, LineProblem, assign_ids, read_jsonl

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# Names looked up in an image folder when no prompts file is given. ``metadata.jsonl`` /
# ``metadata.csv`` with a ``file_name`` column is the layout of the `datasets` "imagefolder" loader.
PROMPT_FILE_NAMES = ("prompts.jsonl", "prompts.csv", "prompts.txt", "metadata.jsonl", "metadata.csv")
_FILE_KEYS = ("file_name", "filename", "file", "image", "path")
_PROMPT_KEYS = ("prompt", "text", "caption", "instruction")


@dataclass(frozen=True)
class Columns:
    """Which input columns hold the id, prompt, image and (edit) source image(s)."""

    id: str = "id"
    prompt: str = "prompt"
    image: str = "image"
    source: str = "source"

    @property
    def core(self) -> tuple[str, ...]:
        return (self.id, self.prompt, self.image, self.source)


@dataclass
class Item:
    """One row to critique.

    ``image`` / ``source`` hold what the input held: a resolved file path, an HF image dict
    (``{"bytes", "path"}``), raw bytes or a ``data:`` URL; ``source`` is a list or None.
    ``problem`` is set when the row cannot be judged at all (the reason it will be rejected with).
    """

    id: str
    prompt: str | None
    image: Any
    source: list[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def fingerprint(self) -> str:
        """A hash of what the judge sees (prompt, image and sources), to detect stale cached critiques.

        Paths count by name (hashing every file on every rerun would cost a full read of the
        dataset); in-line image bytes count by content.
        """
        blob = json.dumps([self.prompt, image_ref(self.image), [image_ref(s) for s in self.source or []]])
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def image_ref(value: Any) -> str | None:
    """A short stable reference to an image value (its path, or a hash of in-line bytes)."""
    if value is None:
        return None
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return "sha256:" + hashlib.sha256(bytes(value["bytes"])).hexdigest()
        return str(value.get("path"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "sha256:" + hashlib.sha256(bytes(value)).hexdigest()
    text = str(value)
    if text.startswith("data:"):
        return "sha256:" + hashlib.sha256(text.encode("ascii", "replace")).hexdigest()
    return text


def inline_bytes(value: Any) -> bytes | None:
    """The bytes of an in-line image value (HF dict with bytes, raw bytes, data URL), else None."""
    import base64
    import binascii

    if isinstance(value, dict) and value.get("bytes") is not None:
        return bytes(value["bytes"])
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str) and value.startswith("data:"):
        _, sep, payload = value.partition(",")
        try:
            return base64.b64decode(payload, validate=True) if sep else None
        except (binascii.Error, ValueError):
            return None
    return None


def _jsonable(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_jsonable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    return False


def _resolve(value: Any, base: Path | None) -> Any:
    """Relative path strings are relative to the input's folder (as everywhere in the CLI)."""
    if isinstance(value, dict) and value.get("bytes") is None and value.get("path"):
        return _resolve(value["path"], base)
    if isinstance(value, str) and value and not value.startswith("data:") and base is not None:
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else base / p)
    return value


def _as_sources(value: Any, base: Path | None) -> list[Any] | None:
    if value is None or value == "" or value == []:
        return None
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    return [_resolve(v, base) for v in items]


def _make_item(row_id: str, row: dict[str, Any], cols: Columns, base: Path | None, where: str,
               dropped: set[str]) -> Item:
    prompt = row.get(cols.prompt)
    image = row.get(cols.image)
    problem = None
    if isinstance(image, (list, tuple)):
        # Some datasets store one-element image lists; more than one image is ambiguous.
        if len(image) == 1:
            image = image[0]
        else:
            problem = f"{where}: column {cols.image!r} holds {len(image)} images; one image per row expected"
            image = None
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        problem = problem or f"{where}: empty {cols.prompt!r}"
    elif not isinstance(prompt, str):
        problem = problem or f"{where}: {cols.prompt!r} must be text, got {type(prompt).__name__}"
        prompt = str(prompt)
    if image is None or image == "":
        problem = problem or f"{where}: empty {cols.image!r}"
    extra = {}
    for key, value in row.items():
        if key in cols.core or key.startswith("_"):
            continue
        if _jsonable(value):
            extra[key] = value
        else:
            dropped.add(key)
    return Item(id=row_id, prompt=prompt, image=_resolve(image, base),
                source=_as_sources(row.get(cols.source), base), extra=extra, problem=problem)


class ItemSource:
    """A sized, re-iterable stream of items with their ids known up front."""

    kind = "items"

    def __init__(self, path: Path):
        self.path = path
        self.dropped_columns: set[str] = set()
        self._ids: list[str] | None = None

    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = self._load_ids()
            _check_unique(self._ids, self.path)
        return self._ids

    def __len__(self) -> int:
        return len(self.ids())

    def __iter__(self) -> Iterator[Item]:
        raise NotImplementedError

    def _load_ids(self) -> list[str]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.kind, "n": len(self),
                "dropped_columns": sorted(self.dropped_columns)}


def _check_unique(ids: list[str], path: Path) -> None:
    seen: set[str] = set()
    for i, rid in enumerate(ids):
        if rid in seen:
            raise InputFileError(f"{path}: duplicate id {rid!r} (row {i}); ids must be unique for resuming")
        seen.add(rid)


def _require_columns(available: list[str], cols: Columns, path: Path, *, image_required: bool = True) -> None:
    needed = [cols.prompt] + ([cols.image] if image_required else [])
    missing = [c for c in needed if c not in available]
    if missing:
        raise InputFileError(
            f"{path}: no column {', '.join(repr(m) for m in missing)}; columns are {', '.join(available) or '(none)'} "
            f"(choose others with --prompt-column / --image-column)"
        )


class JsonlItems(ItemSource):
    """The critique batch format: lines ``{"id", "prompt", "image", "source"?}``."""

    kind = "jsonl"

    def __init__(self, path: Path, cols: Columns):
        super().__init__(path)
        self.cols = cols
        # A bad line (not UTF-8, not JSON, not an object, a repeated id) must not sink the other
        # items: it is kept as a problem and becomes a rejected item with that reason.
        self.problems: list[LineProblem] = []
        rows = read_jsonl(path, problems=self.problems)
        if not rows:
            raise InputFileError(_no_usable_rows(path, self.problems))
        if cols.id != "id":
            for row in rows:
                row["id"] = row.pop(cols.id, None)
        self.rows = assign_ids(rows, path, problems=self.problems)
        present = sorted({k for r in rows for k in r if not k.startswith("_")})
        _require_columns(present, cols, path)
        self.base = path.resolve().parent
        self._entries = _merge_problems(self.rows, self.problems)

    def _load_ids(self) -> list[str]:
        return [rid for rid, _, _ in self._entries]

    def __iter__(self) -> Iterator[Item]:
        cols = Columns("id", self.cols.prompt, self.cols.image, self.cols.source)
        for rid, row, problem in self._entries:
            if problem is not None:
                yield Item(id=rid, prompt=None, image=None, problem=problem.message)
            else:
                yield _make_item(rid, row, cols, self.base, f"{self.path}:{row['_line']}", self.dropped_columns)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "bad_lines": len(self.problems)}


def _no_usable_rows(path: Path, problems: list[LineProblem]) -> str:
    """The error for an input none of whose lines can be used (naming the first few problems)."""
    if not problems:
        return f"{path}: no rows"
    shown = "; ".join(p.message for p in problems[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return f"{path}: no usable line: {shown}{more}"


def _problem_id(problem: LineProblem, taken: set[str]) -> str:
    """The id a bad line is reported under: its own id when it had one nobody else holds, else
    ``line-N`` (with a suffix in the unlikely case that a good row already uses that id)."""
    if problem.id is not None and problem.id not in taken:
        return problem.id
    rid = f"line-{problem.line}"
    n = 1
    while rid in taken:
        n += 1
        rid = f"line-{problem.line}-{n}"
    return rid


def _merge_problems(rows: list[dict[str, Any]], problems: list[LineProblem]
                    ) -> list[tuple[str, dict[str, Any] | None, LineProblem | None]]:
    """Good rows and bad lines in file order as ``(id, row, problem)``, ids all distinct."""
    taken = {str(r["id"]) for r in rows}
    entries: list[tuple[int, str, dict[str, Any] | None, LineProblem | None]] = [
        (int(r["_line"]), str(r["id"]), r, None) for r in rows
    ]
    for p in sorted(problems, key=lambda p: p.line):
        rid = _problem_id(p, taken)
        taken.add(rid)
        entries.append((p.line, rid, None, p))
    entries.sort(key=lambda e: e[0])
    return [(rid, row, problem) for _, rid, row, problem in entries]


class ParquetItems(ItemSource):
    """One or several Parquet files read in record batches (rows numbered across files)."""

    kind = "parquet"

    def __init__(self, path: Path, files: list[Path], cols: Columns, base: Path):
        super().__init__(path)
        import pyarrow.parquet as pq

        self.files = files
        self.cols = cols
        self.base = base
        self._pq = pq
        names = list(pq.ParquetFile(files[0]).schema_arrow.names)
        _require_columns(names, cols, files[0])
        for f in files[1:]:
            other = list(pq.ParquetFile(f).schema_arrow.names)
            _require_columns(other, cols, f)
        self.has_id = cols.id in names

    def _load_ids(self) -> list[str]:
        if not self.has_id:
            total = sum(self._pq.ParquetFile(f).metadata.num_rows for f in self.files)
            return [f"row-{i}" for i in range(total)]
        ids: list[str] = []
        for f in self.files:
            column = self._pq.read_table(f, columns=[self.cols.id]).column(0).to_pylist()
            start = len(ids)
            ids.extend(f"row-{start + i}" if v in (None, "") else str(v) for i, v in enumerate(column))
        return ids

    def __iter__(self) -> Iterator[Item]:
        ids = self.ids()
        index = 0
        for f in self.files:
            for batch in self._pq.ParquetFile(f).iter_batches(batch_size=64):
                for row in batch.to_pylist():
                    yield _make_item(ids[index], row, self.cols, self.base, f"{f.name} row {index}", self.dropped_columns)
                    index += 1

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "files": [str(f) for f in self.files]}


class HFDatasetItems(ItemSource):
    """A folder written by ``Dataset.save_to_disk`` (memory-mapped; image columns left undecoded)."""

    kind = "hf-dataset"

    def __init__(self, path: Path, cols: Columns, split: str | None):
        super().__init__(path)
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:  # datasets raises several types for unreadable folders
            raise InputFileError(f"{path}: not a readable `datasets` folder ({exc})") from None
        if isinstance(ds, datasets.DatasetDict):
            names = list(ds)
            chosen = split or ("train" if "train" in ds else names[0] if len(names) == 1 else None)
            if chosen is None or chosen not in ds:
                raise InputFileError(f"{path}: choose a split with --split; splits are {', '.join(names)}")
            ds = ds[chosen]
            self.split = chosen
        else:
            self.split = None
        _require_columns(list(ds.column_names), cols, path)
        # Rows are read as Arrow (image cells stay {"bytes", "path"} structs): decoding every image
        # into PIL only to re-encode it would double the work, and casting the columns instead
        # would write a cache file into the user's dataset folder.
        self.ds = ds.with_format("arrow")
        self.cols = cols
        self.base = path.resolve()

    def _load_ids(self) -> list[str]:
        if self.cols.id not in self.ds.column_names:
            return [f"row-{i}" for i in range(len(self.ds))]
        column = self.ds.select_columns([self.cols.id]).data.column(0).to_pylist()
        return [f"row-{i}" if v in (None, "") else str(v) for i, v in enumerate(column)]

    def __iter__(self) -> Iterator[Item]:
        ids = self.ids()
        index = 0
        for batch in self.ds.iter(batch_size=64):
            for row in batch.to_pylist():
                yield _make_item(ids[index], row, self.cols, self.base, f"row {index}", self.dropped_columns)
                index += 1

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "split": self.split}


def read_prompts_file(path: Path, problems: list[LineProblem] | None = None) -> dict[str, dict[str, Any]]:
    """Map image file name -> row (with at least ``prompt``) from a JSONL, CSV or TXT prompts file.

    JSONL / CSV rows need a file column (``file_name``, ``filename``, ``file``, ``image`` or
    ``path``) and a prompt column (``prompt``, ``text``, ``caption`` or ``instruction``); other
    columns (``id``, ``source``, anything else) come along. TXT lines are ``FILE<TAB>PROMPT``.

    A line that cannot be used (not UTF-8, not JSON, no file name, a file listed twice) is
    appended to ``problems`` when a list is given (the caller rejects it as an item of its own);
    without one it raises :class:`InputFileError`. A file with no usable line always raises.
    """
    if not path.is_file():
        raise InputFileError(f"prompts file not found: {path}")
    found: list[LineProblem] = [] if problems is None else problems

    def problem(lineno: int, what: str) -> None:
        found.append(LineProblem(lineno, f"{path}:{lineno}: {what}"))
        if problems is None:
            raise InputFileError(found[-1].message)

    suffix = path.suffix.lower()
    rows: list[tuple[int, dict[str, Any]]] = []
    if suffix == ".txt":
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    problem(lineno, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")
                    continue
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                name, sep, prompt = line.partition("\t")
                if not sep or not name.strip() or not prompt.strip():
                    problem(lineno, "expected FILE<TAB>PROMPT")
                    continue
                rows.append((lineno, {"file_name": name.strip(), "prompt": prompt.strip()}))
    elif suffix in (".jsonl", ".json"):
        rows = [(int(r.pop("_line")), r) for r in read_jsonl(path, problems=found if problems is not None else None)]
    elif suffix == ".csv":
        # utf-8-sig: a BOM would otherwise glue itself to the first column's name. The csv module
        # reads the stream whole, so a non-UTF-8 byte refuses the file (naming where it is).
        try:
            with path.open(encoding="utf-8-sig", newline="") as fh:
                reader = csv.DictReader(fh)
                rows = [(i, dict(r)) for i, r in enumerate(reader, 2)]
        except UnicodeDecodeError as exc:
            raise InputFileError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                                 f"{exc.start}); save it as UTF-8") from None
    else:
        raise InputFileError(f"{path}: prompts file must be .jsonl, .csv or .txt")
    if not rows:
        raise InputFileError(_no_usable_rows(path, found))
    first = rows[0][1]
    file_key = next((k for k in _FILE_KEYS if k in first), None)
    prompt_key = next((k for k in _PROMPT_KEYS if k in first), None)
    if file_key is None or prompt_key is None:
        raise InputFileError(
            f"{path}: needs a file column ({'/'.join(_FILE_KEYS)}) and a prompt column ({'/'.join(_PROMPT_KEYS)}); "
            f"found {', '.join(first) or '(none)'}"
        )
    mapping: dict[str, dict[str, Any]] = {}
    for lineno, row in rows:
        name = row.get(file_key)
        if not name:
            problem(lineno, f"empty {file_key!r}")
            continue
        name = Path(str(name)).as_posix()
        if name in mapping:
            problem(lineno, f"{name!r} is listed twice")
            continue
        out = {k: v for k, v in row.items() if k not in (file_key, prompt_key)}
        out["prompt"] = row.get(prompt_key)
        mapping[name] = out
    return mapping


class ImageFolderItems(ItemSource):
    """A folder of images with a prompts file, or a ``.txt`` caption beside each image.

    Ids are the image paths relative to the folder. An image with no prompt is rejected with that
    reason; a prompts entry whose image is missing is rejected as "image file not found".
    """

    kind = "image-folder"

    def __init__(self, path: Path, prompts: Path | None, exclude: Path | None = None):
        super().__init__(path)
        self.root = path.resolve()
        # An output folder inside the image folder holds plots and exported images: not input.
        skip = exclude.resolve() if exclude is not None else None
        images = sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            and (skip is None or not p.resolve().is_relative_to(skip))
        )
        if prompts is None:
            prompts = next((self.root / n for n in PROMPT_FILE_NAMES if (self.root / n).is_file()), None)
        self.prompts_file = prompts
        # Lines of the prompts file that name no usable image become rejected items of their own.
        self.problems: list[LineProblem] = []
        self._problem_ids: list[str] = []
        self.caption_problems: dict[str, str] = {}
        if prompts is not None:
            self.mapping = read_prompts_file(prompts, self.problems)
        elif images and all((self.root / n).with_suffix(".txt").is_file() for n in images):
            self.mapping = {}
            for n in images:
                caption = (self.root / n).with_suffix(".txt")
                try:
                    self.mapping[n] = {"prompt": caption.read_text(encoding="utf-8-sig").strip()}
                except UnicodeDecodeError as exc:  # this image is rejected with the reason, not the run
                    self.caption_problems[n] = (f"{caption}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} "
                                                f"at offset {exc.start})")
        else:
            raise InputFileError(
                f"{path}: an image folder needs a prompts file (--prompts FILE, or one of "
                f"{', '.join(PROMPT_FILE_NAMES)} in the folder) or a .txt caption beside every image"
            )
        if not images and not self.mapping:
            raise InputFileError(f"{path}: no images found")
        # Images on disk in sorted order, then entries that name files which are not there.
        self.names = images + sorted(set(self.mapping) - set(images))

    def _load_ids(self) -> list[str]:
        ids = [str(self.mapping.get(n, {}).get("id") or n) for n in self.names]
        taken = set(ids)
        self._problem_ids = []
        for p in self.problems:
            rid = _problem_id(p, taken)
            taken.add(rid)
            self._problem_ids.append(rid)
        return ids + self._problem_ids

    def __iter__(self) -> Iterator[Item]:
        ids = self.ids()
        for rid, name in zip(ids[:len(self.names)], self.names, strict=True):
            entry = dict(self.mapping.get(name, {}))
            entry.pop("id", None)
            item = _make_item(rid, {**entry, "image": name}, Columns(), self.root, name, self.dropped_columns)
            if name in self.caption_problems:
                item.problem = self.caption_problems[name]
            elif name not in self.mapping:
                item.problem = f"{name}: no prompt for this image in {self.prompts_file or 'its .txt caption'}"
            yield item
        for rid, problem in zip(self._problem_ids, self.problems, strict=True):
            yield Item(id=rid, prompt=None, image=None, problem=problem.message)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "prompts_file": str(self.prompts_file) if self.prompts_file else None,
                "bad_lines": len(self.problems)}


def open_items(
    path: str | os.PathLike[str],
    *,
    prompts: str | os.PathLike[str] | None = None,
    columns: Columns | None = None,
    split: str | None = None,
    exclude: str | os.PathLike[str] | None = None,
) -> ItemSource:
    """Open a dataset to curate, detecting its format.

    Args:
        path: a ``.jsonl`` file (critique batch format), a ``.parquet`` file, a folder written by
            ``datasets`` (``save_to_disk``), a folder of Parquet files (the Hub layout, e.g.
            ``data/train-*.parquet``), or a folder of images with a prompts file.
        prompts: the prompts file of an image folder (JSONL / CSV / TXT mapping file name -> prompt).
        columns: column names when they differ from ``id`` / ``prompt`` / ``image`` / ``source``.
        split: the split of a ``DatasetDict`` folder or of a Parquet folder (file names starting
            with it); default ``train`` when there are several.
        exclude: a folder whose images are not items (the output folder, when it sits inside an
            image folder).

    Raises:
        InputFileError: the path is missing, of an unknown kind, or lacks a needed column.
    """
    p = Path(path).expanduser()
    cols = columns or Columns()
    if not p.exists():
        raise InputFileError(f"input not found: {p}")
    if prompts is not None and not p.is_dir():
        raise InputFileError("--prompts only applies to a folder of images")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix in (".jsonl", ".json"):
            return JsonlItems(p, cols)
        if suffix == ".parquet":
            return ParquetItems(p, [p], cols, p.resolve().parent)
        raise InputFileError(f"{p}: unsupported input file type {suffix or '(none)'}; use .jsonl or .parquet")
    if any((p / n).is_file() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
        return HFDatasetItems(p, cols, split)
    skip = Path(exclude) if exclude is not None else None
    if prompts is not None:
        return ImageFolderItems(p, Path(prompts).expanduser(), skip)
    parquet = sorted(f for f in p.rglob("*.parquet") if f.is_file())
    if parquet:
        if split is not None:
            chosen = [f for f in parquet if f.name.startswith(split) or f.parent.name == split]
        else:
            chosen = [f for f in parquet if f.name.startswith("train")] or parquet
        if not chosen:
            raise InputFileError(f"{p}: no Parquet file for split {split!r}")
        return ParquetItems(p, chosen, cols, p.resolve())
    return ImageFolderItems(p, None, skip)


class ListItems(ItemSource):
    """Rows given in Python (dicts in the critique batch format); paths relative to ``base_dir``."""

    kind = "rows"

    def __init__(self, rows: list[dict[str, Any]], base_dir: str | os.PathLike[str] | None = None,
                 columns: Columns | None = None):
        super().__init__(Path(base_dir) if base_dir else Path("."))
        self.cols = columns or Columns()
        self.base = Path(base_dir).resolve() if base_dir else None
        self.rows = [dict(r) for r in rows]
        for i, row in enumerate(self.rows):
            if row.get(self.cols.id) in (None, ""):
                row[self.cols.id] = f"row-{i}"

    def _load_ids(self) -> list[str]:
        return [str(r[self.cols.id]) for r in self.rows]

    def __iter__(self) -> Iterator[Item]:
        for rid, row in zip(self.ids(), self.rows, strict=True):
            yield _make_item(rid, row, self.cols, self.base, f"row {rid}", self.dropped_columns)
