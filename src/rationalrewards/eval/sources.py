"""Where benchmark rows come from: local JSON/JSONL/Parquet files or folders, local Hugging Face
dataset folders (``save_to_disk`` output or a downloaded snapshot), or a hub id through
``datasets`` when online.

Benchmarks with embedded images are large (MMRB2 is gigabytes of PNG bytes), so a source is read
in two kinds of pass: a *light* pass that skips every binary column (ids, labels, categories: the
index of the run) and *full* passes that stream rows in order, a batch at a time, so only the
rows being judged are ever in memory. ``pyarrow`` and ``datasets`` are imported only when a
Parquet file or a dataset folder is actually read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import InputFileError

_BATCH_ROWS = 32
_BOM = b"\xef\xbb\xbf"
_META_JSON = {"dataset_info.json", "state.json", "dataset_dict.json", "dataset_infos.json"}
_SPLIT_NAMES = ("train", "test", "validation", "valid", "val", "dev", "eval")
_DATA_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass
class Row:
    """One source row; ``base_dir`` resolves relative image paths (the data file's folder)."""

    index: int
    data: dict[str, Any]
    base_dir: str | None
    origin: str
    # Set for a line that could not be read at all (not UTF-8, not JSON, not an object): ``data``
    # is empty, ``bad_id`` is the id it is reported under (``line-N``) and this is the reason.
    problem: str | None = None
    bad_id: str | None = None


class RowSource:
    """A sequence of rows that can be streamed several times in the same order."""

    description: str = ""
    revision: str | None = None

    @property
    def columns(self) -> list[str]:
        raise NotImplementedError

    def rows(self, *, light: bool = False) -> Iterator[Row]:
        raise NotImplementedError


# -- JSON / JSONL -------------------------------------------------------------------------------
class JsonRows(RowSource):
    """A ``.jsonl`` (one object per line) or ``.json`` file (a list of objects, or an object with
    a ``data`` / ``rows`` / ``items`` / ``examples`` list)."""

    def __init__(self, path: Path):
        self.path = path
        self.description = str(path)
        self._columns: list[str] | None = None

    def _iter(self) -> Iterator[tuple[dict[str, Any], str, str | None, int | None]]:
        """``(row, origin, problem, line)``; a JSONL line that cannot be a row comes with its
        problem (and an empty row) so one bad line costs one item, not the run."""
        if self.path.suffix in (".jsonl", ".ndjson"):
            with self.path.open("rb") as fh:
                for lineno, raw in enumerate(fh, 1):
                    origin = f"{self.path}:{lineno}"
                    if lineno == 1 and raw.startswith(_BOM):
                        raw = raw[len(_BOM):]  # editors on Windows write one; it is not part of the data
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        yield {}, origin, (f"{origin}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                                           f"{exc.start + 1})"), lineno
                        continue
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        yield {}, origin, f"{origin}: not valid JSON ({exc.msg})", lineno
                        continue
                    except RecursionError:
                        yield {}, origin, f"{origin}: not valid JSON (nested too deeply)", lineno
                        continue
                    if not isinstance(row, dict):
                        yield {}, origin, f"{origin}: expected a JSON object, got {type(row).__name__}", lineno
                        continue
                    yield row, origin, None, lineno
            return
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8-sig"))  # -sig: a leading BOM is not data
        except UnicodeDecodeError as exc:
            raise InputFileError(f"{self.path}: not UTF-8 text (byte at offset {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{self.path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(doc, dict):
            doc = next((doc[k] for k in ("data", "rows", "items", "examples") if isinstance(doc.get(k), list)), None)
        if not isinstance(doc, list):
            raise InputFileError(f"{self.path}: expected a list of objects (or {{\"data\": [...]}})")
        for i, row in enumerate(doc):
            if not isinstance(row, dict):
                raise InputFileError(f"{self.path}: element {i} is not an object")
            yield row, f"{self.path}[{i}]", None, None

    @property
    def columns(self) -> list[str]:
        if self._columns is None:
            seen: dict[str, None] = {}
            for row, _, _, _ in self._iter():
                seen.update(dict.fromkeys(row))
            self._columns = list(seen)
        return self._columns

    def rows(self, *, light: bool = False) -> Iterator[Row]:
        base = str(self.path.resolve().parent)
        for i, (row, origin, problem, line) in enumerate(self._iter()):
            yield Row(i, row, base, origin, problem, f"line-{line}" if problem else None)


# -- Arrow-typed sources (Parquet, datasets) -----------------------------------------------------
def _is_heavy(t: Any) -> bool:
    """Binary anywhere inside the type (image bytes, lists of image dicts)."""
    import pyarrow as pa

    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return True
    if getattr(pa.types, "is_binary_view", None) and pa.types.is_binary_view(t):
        return True
    if pa.types.is_struct(t):
        return any(_is_heavy(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _is_heavy(t.value_type)
    return False


class ParquetRows(RowSource):
    """A Parquet file, streamed in small batches (images never all in memory)."""

    def __init__(self, path: Path):
        try:
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover - depends on the install
            raise InputFileError("reading Parquet needs pyarrow: pip install 'rationalrewards[data]'") from None
        self.path = path
        self.description = str(path)
        try:
            self._file = pq.ParquetFile(path)
        except Exception as exc:
            raise InputFileError(f"{path}: not a readable Parquet file ({exc})") from None
        schema = self._file.schema_arrow
        self._columns = list(schema.names)
        self._light = [f.name for f in schema if not _is_heavy(f.type)]

    @property
    def columns(self) -> list[str]:
        return self._columns

    def rows(self, *, light: bool = False) -> Iterator[Row]:
        base = str(self.path.resolve().parent)
        cols = self._light if light else None
        i = 0
        for batch in self._file.iter_batches(batch_size=_BATCH_ROWS, columns=cols):
            for row in batch.to_pylist():
                yield Row(i, row, base, f"{self.path} row {i}")
                i += 1


class DatasetRows(RowSource):
    """A ``datasets.Dataset`` (memory-mapped Arrow), read as raw storage: Image cells stay
    ``{"bytes", "path"}`` dicts and are decoded only by the judge."""

    def __init__(self, ds: Any, description: str, base_dir: str | None, revision: str | None = None):
        self.ds = ds
        self.description = description
        self.base_dir = base_dir
        self.revision = revision
        schema = ds.data.schema
        self._columns = list(schema.names)
        self._light = [f.name for f in schema if not _is_heavy(f.type)]

    @property
    def columns(self) -> list[str]:
        return self._columns

    def rows(self, *, light: bool = False) -> Iterator[Row]:
        ds = self.ds.select_columns(self._light) if light else self.ds
        i = 0
        for table in ds.with_format("arrow").iter(batch_size=_BATCH_ROWS):
            for row in table.to_pylist():
                yield Row(i, row, self.base_dir, f"{self.description} row {i}")
                i += 1


class ConcatRows(RowSource):
    """Several files read one after the other (sorted by path, so the order is stable)."""

    def __init__(self, parts: list[RowSource], description: str):
        self.parts = parts
        self.description = description

    @property
    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for p in self.parts:
            seen.update(dict.fromkeys(p.columns))
        return list(seen)

    def rows(self, *, light: bool = False) -> Iterator[Row]:
        i = 0
        for part in self.parts:
            for row in part.rows(light=light):
                # Several files may each have a bad line N: the file name keeps their ids apart.
                bad_id = f"{Path(part.description).name}:{row.bad_id}" if row.bad_id else None
                yield Row(i, row.data, row.base_dir, row.origin, row.problem, bad_id)
                i += 1


# -- opening ------------------------------------------------------------------------------------
def _file_source(path: Path) -> RowSource:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return JsonRows(path)
    if suffix == ".parquet":
        return ParquetRows(path)
    if suffix == ".arrow":
        datasets = _import_datasets()
        try:
            ds = datasets.Dataset.from_file(str(path))
        except Exception as exc:
            raise InputFileError(f"{path}: not a readable Arrow dataset file ({exc})") from None
        return DatasetRows(ds, str(path), str(path.resolve().parent))
    raise InputFileError(f"{path}: unsupported data file type {suffix!r}; use .parquet, .jsonl, .json or .arrow")


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:  # pragma: no cover - depends on the install
        raise InputFileError("reading Hugging Face datasets needs `datasets`: pip install 'rationalrewards[data]'") from None
    return datasets


def _pick_split(dsd: Any, split: str | None, where: str) -> Any:
    names = list(dsd.keys())
    if split is not None:
        if split not in dsd:
            raise InputFileError(f"{where}: no split {split!r}; splits: {', '.join(names)}")
        return dsd[split]
    if len(names) == 1:
        return dsd[names[0]]
    raise InputFileError(f"{where}: several splits ({', '.join(names)}); choose one with --split")


def _split_of(rel: Path) -> str | None:
    for part in rel.parts[:-1]:
        if part in _SPLIT_NAMES:
            return part
    stem = rel.name.split(".")[0]
    for name in _SPLIT_NAMES:
        if stem == name or re.match(rf"^{name}[-_]", stem):
            return name
    return None


def _folder_source(folder: Path, config: str | None, split: str | None) -> RowSource:
    if (folder / "dataset_dict.json").is_file() or ((folder / "state.json").is_file()
                                                    and (folder / "dataset_info.json").is_file()):
        datasets = _import_datasets()
        try:
            loaded = datasets.load_from_disk(str(folder))
        except Exception as exc:
            raise InputFileError(f"{folder}: not a readable saved dataset ({exc})") from None
        if isinstance(loaded, datasets.DatasetDict):
            loaded = _pick_split(loaded, split, str(folder))
        return DatasetRows(loaded, str(folder), str(folder.resolve()))

    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in _DATA_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.name not in _META_JSON
    )
    if any(p.suffix.lower() != ".json" for p in files):
        # A snapshot's loose .json files are metadata when real data files exist beside them.
        files = [p for p in files if p.suffix.lower() != ".json"]
    if not files:
        raise InputFileError(f"{folder}: no .parquet, .jsonl or .json data files found")
    rels = [p.relative_to(folder) for p in files]
    if config is not None:
        keep = [r for r in rels if config in r.parts[:-1] or r.name.startswith(config)]
        if not keep:
            tops = sorted({r.parts[0] for r in rels if len(r.parts) > 1})
            raise InputFileError(f"{folder}: no data files for --config {config!r}; folders: {', '.join(tops) or '(none)'}")
        rels = keep
    else:
        tops = sorted({r.parts[0] for r in rels if len(r.parts) > 1 and r.parts[0] not in _SPLIT_NAMES
                       and r.parts[0] != "data"})
        if len(tops) > 1:
            raise InputFileError(f"{folder}: several configurations ({', '.join(tops)}); choose one with --config")
    if split is not None:
        keep = [r for r in rels if _split_of(r) == split]
        if not keep:
            found = sorted({s for r in rels if (s := _split_of(r))})
            raise InputFileError(f"{folder}: no data files for --split {split!r}; splits: {', '.join(found) or '(none)'}")
        rels = keep
    else:
        splits = sorted({s for r in rels if (s := _split_of(r))})
        if len(splits) > 1:
            raise InputFileError(f"{folder}: several splits ({', '.join(splits)}); choose one with --split")
    parts = [_file_source(folder / r) for r in rels]
    return parts[0] if len(parts) == 1 else ConcatRows(parts, f"{folder} ({len(parts)} files)")


def looks_like_hub_id(data: str) -> bool:
    return bool(_HUB_ID.match(data)) and not Path(data).exists()


def open_source(
    data: str | Path,
    *,
    config: str | None = None,
    split: str | None = None,
    revision: str | None = None,
) -> RowSource:
    """Open ``data``: a file, a folder, or (when it is not a local path) a hub dataset id.

    Hub ids are loaded with ``datasets.load_dataset(data, name=config, split=split,
    revision=revision)``; pass ``revision`` (a commit) so that the numbers can be reproduced.
    """
    path = Path(data).expanduser()
    if path.is_file():
        return _file_source(path)
    if path.is_dir():
        return _folder_source(path, config, split)
    text = str(data)
    if not looks_like_hub_id(text):
        raise InputFileError(f"data not found: {text} (give a file, a folder or a hub dataset id ORG/NAME)")
    datasets = _import_datasets()
    try:
        loaded = datasets.load_dataset(text, name=config, split=split, revision=revision)
    except Exception as exc:
        raise InputFileError(f"could not load hub dataset {text!r} (config={config}, split={split}, "
                             f"revision={revision}): {exc}") from None
    if isinstance(loaded, datasets.DatasetDict):
        loaded = _pick_split(loaded, split, text)
    return DatasetRows(loaded, f"hf://{text}" + (f"@{revision}" if revision else ""), None, revision)
