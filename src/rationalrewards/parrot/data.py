"""Preference pairs in, normalised pairs (with content-addressed images) out.

Sources: a JSONL file, a Parquet file, a folder of JSONL/Parquet files, or a Hugging Face dataset
saved with ``save_to_disk``. Canonical columns::

    id, task (t2i|edit), prompt, source (edit only; one image or a list), image_a, image_b,
    label (A|B|tie)

``chosen`` / ``rejected`` columns are understood too (label A, chosen shown as image A). Column
presets map common public sources without conversion; ``columns`` overrides any of them. Image
cells may be paths (relative to ``image_root`` or the input's folder), bytes, Hugging Face
image dicts ``{"bytes", "path"}`` or PIL images.

Images are normalised once (RGB, upright, at most ``max_pixels``) and stored by the SHA-256 of
their bytes under ``DIR/images/ab/abcdef....png``: a picture used by many pairs is stored once,
and the teacher and the student see exactly the same bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..images import ImageInputError, PreparedImage, load_image
from ..io import InputFileError

CANONICAL = ("id", "task", "prompt", "source", "image_a", "image_b", "label", "chosen", "rejected", "category")

# Column presets: canonical name -> column in the source. ``label_format`` says how to read the
# label cell. They follow the public releases' column names; check them against your copy.
PRESETS: dict[str, dict[str, Any]] = {
    "canonical": {"columns": {}, "label_format": "ab"},
    # Pick-a-Pic v1/v2: caption, jpg_0, jpg_1, label_0 (1 = image 0 preferred, 0.5 = tie).
    "pickapic": {
        "columns": {"id": "ranking_id", "prompt": "caption", "image_a": "jpg_0", "image_b": "jpg_1", "label": "label_0"},
        "label_format": "prob_a",
    },
    # HPDv3 pair files: prompt, path1 (preferred), path2.
    "hpdv3": {"columns": {"prompt": "prompt", "chosen": "path1", "rejected": "path2"}, "label_format": "ab"},
    # ImageRewardDB-style pairs exported as better / worse images of one prompt.
    "imagereward": {
        "columns": {"id": "prompt_id", "prompt": "prompt", "chosen": "img_better", "rejected": "img_worse"},
        "label_format": "ab",
    },
    # EditReward-style edit pairs: instruction, source_image, two candidates and a ranking string.
    "editreward": {
        "columns": {"prompt": "instruction", "source": "source_image", "image_a": "candidate_1",
                    "image_b": "candidate_2", "label": "ranking"},
        "label_format": "ranking",
    },
    # GenAI-Bench-style votes: left/right images and vote_type.
    "genai-bench": {
        "columns": {"prompt": "prompt", "image_a": "left_image", "image_b": "right_image", "label": "vote_type"},
        "label_format": "ab",
    },
    # Generic preference data: prompt, chosen, rejected.
    "chosen-rejected": {"columns": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}, "label_format": "ab"},
}
# Detection order for preset=auto: the first whose columns are all present wins.
_AUTO_ORDER = ("canonical", "pickapic", "editreward", "genai-bench", "hpdv3", "imagereward", "chosen-rejected")

_AB = {
    "a": "A", "b": "B", "image a": "A", "image b": "B", "left": "A", "right": "B", "leftvote": "A",
    "rightvote": "B", "first": "A", "second": "B", "1": "A", "2": "B", "image_a": "A", "image_b": "B",
    "tie": "tie", "tievote": "tie", "bothbad_vote": "tie", "bothbad": "tie", "equal": "tie", "draw": "tie",
    "same": "tie", "a=b": "tie", "=": "tie",
}


@dataclass
class Pair:
    """One normalised preference pair; image fields are paths relative to the output folder."""

    id: str
    task: str
    prompt: str
    image_a: str
    image_b: str
    label: str
    source: list[str] = field(default_factory=list)
    category: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "task": self.task, "prompt": self.prompt, "source": self.source,
                "image_a": self.image_a, "image_b": self.image_b, "label": self.label, "category": self.category}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Pair:
        return cls(id=str(row["id"]), task=row["task"], prompt=row["prompt"], image_a=row["image_a"],
                   image_b=row["image_b"], label=row["label"], source=list(row.get("source") or []),
                   category=row.get("category"))


class PairError(ValueError):
    """A row cannot become a pair; ``kind`` is a short reason code for the stats."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# -- labels ------------------------------------------------------------------------------------
def normalise_label(value: Any, fmt: str = "ab") -> str:
    """A label cell -> ``A``, ``B`` or ``tie``; raises :class:`PairError` (kind ``label``)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise PairError("label", "missing label")
    if fmt == "auto":
        if not isinstance(value, str):
            raise PairError("label", f"numeric label {value!r}: set input.label_format to prob_a (1 = A preferred, "
                                     "0.5 = tie) or index (0 = A, 1 = B)")
        fmt = "ab"
    if fmt == "prob_a":
        try:
            p = float(value)
        except (TypeError, ValueError):
            raise PairError("label", f"label {value!r} is not a probability that A is preferred") from None
        if p == 0.5:
            return "tie"
        if p in (0.0, 1.0):
            return "A" if p == 1.0 else "B"
        raise PairError("label", f"label {value!r}: expected 1 (A), 0 (B) or 0.5 (tie)")
    if fmt == "index":
        if str(value).strip() in ("0", "1"):
            return "A" if str(value).strip() == "0" else "B"
        raise PairError("label", f"label {value!r}: expected the index 0 (A) or 1 (B) of the preferred image")
    if fmt == "ranking":
        return _ranking_label(str(value))
    key = re.sub(r"\s+", " ", str(value).strip().lower().strip(".\"'"))
    key = key.replace("it's a ", "").replace("its a ", "")
    if key in _AB:
        return _AB[key]
    if re.search(r"[<>]", key):
        return _ranking_label(key)
    raise PairError("label", f"unknown label {value!r}; expected A, B or tie")


def _ranking_label(text: str) -> str:
    """``A>B`` / ``B>A`` / ``A=B`` (also ``1>2``, ``A<B``, spaces allowed)."""
    s = re.sub(r"\s+", "", text).upper().replace("1", "A").replace("2", "B")
    m = re.fullmatch(r"([AB])([<>=]+)([AB])", s)
    if not m or m.group(1) == m.group(3):
        raise PairError("label", f"unreadable ranking {text!r}; expected e.g. A>B, B>A or A=B")
    left, op, right = m.groups()
    if "=" in op and "<" not in op and ">" not in op:
        return "tie"
    winner = left if ">" in op else right
    return winner


# -- reading rows -------------------------------------------------------------------------------
def _read_parquet(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise InputFileError("reading Parquet needs pyarrow: pip install 'rationalrewards[data]'") from exc
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise InputFileError(f"{path}: not a readable Parquet file ({exc})") from None
    for batch in pf.iter_batches(batch_size=256):
        yield from batch.to_pylist()


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _escape_surrogates(value: Any) -> Any:
    """``value`` with each lone surrogate written as its ``\\udXXX`` escape (valid UTF-8)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_escape_surrogates(k): _escape_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_surrogates(v) for v in value]
    return value


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; a line that cannot be a row becomes ``{"_bad": reason, "_bad_kind"}``.

    One broken line must not sink 100k good ones: a line that is not UTF-8 (kind ``encoding``),
    not JSON or not an object (kind ``json``), or holds text with a lone surrogate (kind
    ``encoding``: valid JSON, but no prompt a teacher or a UTF-8 file can carry) is recorded in
    ``bad_pairs.jsonl`` with its reason. A UTF-8 BOM before the first line is accepted.
    """
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # editors on Windows write one; it is not part of the data
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield {"_bad": f"{path.name}:{lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                               f"{exc.start + 1})", "_bad_kind": "encoding", "_line": lineno}
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield {"_bad": f"{path.name}:{lineno}: not valid JSON ({exc.msg})", "_bad_kind": "json", "_line": lineno}
                continue
            except RecursionError:
                yield {"_bad": f"{path.name}:{lineno}: not valid JSON (nested too deeply)", "_bad_kind": "json",
                       "_line": lineno}
                continue
            if not isinstance(row, dict):
                yield {"_bad": f"{path.name}:{lineno}: expected a JSON object, got {type(row).__name__}",
                       "_bad_kind": "json", "_line": lineno}
                continue
            if _has_lone_surrogate(row):
                # Kept with its columns (escaped) so the bad pair is reported under its own id.
                row = _escape_surrogates(row)
                row.update(_bad=f"{path.name}:{lineno}: text with a lone surrogate (not valid Unicode)",
                           _bad_kind="encoding")
            row["_line"] = lineno
            yield row


def _read_hf(path: Path, split: str | None) -> Iterator[dict[str, Any]]:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover
        raise InputFileError("reading a Hugging Face dataset folder needs datasets: pip install datasets") from exc
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        name = split or ("train" if "train" in ds else next(iter(ds)))
        if name not in ds:
            raise InputFileError(f"{path}: no split {name!r}; available: {', '.join(ds)}")
        ds = ds[name]
    # Keep image cells as {"bytes", "path"} dicts: decoding to PIL and re-encoding would change
    # the bytes (and the content address) for nothing.
    feats = {}
    for col, feat in ds.features.items():
        if isinstance(feat, datasets.Image):
            feats[col] = datasets.Image(decode=False)
        elif isinstance(feat, (datasets.Sequence, datasets.List)) and isinstance(getattr(feat, "feature", None), datasets.Image):
            feats[col] = datasets.List(datasets.Image(decode=False))
    if feats:
        ds = ds.cast(datasets.Features({**ds.features, **feats}))
    yield from ds


def iter_rows(path: str | Path, *, split: str | None = None) -> tuple[Iterator[dict[str, Any]], Path]:
    """Rows of a pairs source and the folder relative paths resolve against."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputFileError(f"pairs input not found: {p}")
    if p.is_dir():
        if (p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file() or (p / "state.json").is_file():
            return _read_hf(p, split), p
        files = sorted([*p.glob("*.parquet"), *p.glob("*.jsonl")]) or sorted([*p.rglob("*.parquet"), *p.rglob("*.jsonl")])
        if not files:
            raise InputFileError(f"{p}: folder has no .jsonl or .parquet files and is not a saved dataset")

        def chain() -> Iterator[dict[str, Any]]:
            for f in files:
                for i, row in enumerate(_read_parquet(f) if f.suffix == ".parquet" else _read_jsonl(f)):
                    row.setdefault("_line", i + 1)
                    row["_file"] = f.relative_to(p).as_posix()
                    yield row

        return chain(), p
    if p.suffix == ".parquet":
        return _read_parquet(p), p.parent
    if p.suffix in (".jsonl", ".json", ".ndjson"):
        return _read_jsonl(p), p.parent
    raise InputFileError(f"{p}: unsupported pairs file; use .jsonl, .parquet or a dataset folder")


def peek_good_row(rows: Iterator[dict[str, Any]]) -> tuple[dict[str, Any] | None, Iterator[dict[str, Any]]]:
    """The first well-formed row (for column detection) and an iterator over all rows."""
    buffered: list[dict[str, Any]] = []
    first = None
    for row in rows:
        buffered.append(row)
        if not row.get("_bad"):
            first = row
            break
    return first, itertools.chain(buffered, rows)


def detect_preset(columns: set[str]) -> str:
    """The first preset whose mapped columns (all but ``id``) are present."""
    if {"prompt", "image_a", "image_b", "label"} <= columns or {"prompt", "chosen", "rejected"} <= columns:
        return "canonical"
    for name in _AUTO_ORDER[1:]:
        mapping = PRESETS[name]["columns"]
        if {v for k, v in mapping.items() if k != "id"} <= columns:
            return name
    raise InputFileError(
        "cannot tell which columns hold the pair; found "
        f"{', '.join(sorted(columns)) or 'none'}. Give input.columns (e.g. --column prompt=caption) "
        f"or a preset ({', '.join(PRESETS)})"
    )


@dataclass
class ColumnMap:
    """Canonical name -> source column, and how to read the label."""

    columns: dict[str, str]
    label_format: str
    preset: str

    @classmethod
    def build(cls, preset: str, overrides: dict[str, str], label_format: str, first_row: dict[str, Any] | None) -> ColumnMap:
        unknown = set(overrides) - set(CANONICAL)
        if unknown:
            raise InputFileError(f"unknown canonical column(s) {sorted(unknown)} in the column mapping; "
                                 f"known: {', '.join(CANONICAL)}")
        if preset == "auto":
            preset = "canonical" if overrides else detect_preset(set(first_row or ()))
        if preset not in PRESETS:
            raise InputFileError(f"unknown input preset {preset!r}; known: auto, {', '.join(PRESETS)}")
        base = {k: k for k in CANONICAL} if preset == "canonical" else {"id": "id", "task": "task", "category": "category"}
        columns = {**base, **PRESETS[preset]["columns"], **overrides}
        fmt = PRESETS[preset]["label_format"] if label_format == "auto" and preset != "canonical" else label_format
        return cls(columns, fmt, preset)

    def get(self, row: dict[str, Any], name: str) -> Any:
        col = self.columns.get(name)
        return row.get(col) if col else None


# -- normalising one row ---------------------------------------------------------------------------
def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, tuple, bytes)) and len(value) == 0)


def row_id(row: dict[str, Any], cmap: ColumnMap, index: int) -> str:
    value = cmap.get(row, "id")
    if not _is_empty(value):
        return str(value)
    prefix = f"{row['_file']}:" if row.get("_file") else ""
    line = row.get("_line")
    return f"{prefix}line-{line}" if line is not None else f"{prefix}row-{index}"


def _resolve(cell: Any, base: Path) -> Any:
    if isinstance(cell, str) and not cell.startswith("data:"):
        p = Path(cell).expanduser()
        return str(p if p.is_absolute() else base / p)
    if isinstance(cell, dict) and cell.get("bytes") is None and isinstance(cell.get("path"), str):
        return {**cell, "path": _resolve(cell["path"], base)}
    return cell


class ImageStore:
    """Content-addressed image folder: ``images/<sha[:2]>/<sha>.<ext>`` under ``root``."""

    _EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}

    def __init__(self, root: str | Path, max_pixels: int | None):
        self.root = Path(root)
        self.max_pixels = max_pixels

    def put(self, cell: Any, base: Path, name: str) -> str:
        """Normalise and store one image; returns its path relative to ``root``."""
        img = load_image(_resolve(cell, base), max_pixels=self.max_pixels, name=name)
        rel = self.relpath(img)
        dest = self.root / rel
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(img.data)
            # Same content, same name: a concurrent writer can only produce identical bytes.
            os.replace(tmp, dest)
        return rel

    def relpath(self, img: PreparedImage) -> str:
        sha = img.sha256
        return f"images/{sha[:2]}/{sha}.{self._EXT.get(img.mime, 'png')}"

    def open(self, rel: str) -> PreparedImage:
        """A stored image as a :class:`PreparedImage`; pixels are decoded only if a local
        backend asks for them (an HTTP teacher only needs the bytes)."""
        import io

        from PIL import Image

        path = self.root / rel
        data = path.read_bytes()
        mime = {v: k for k, v in self._EXT.items()}.get(Path(rel).suffix.lstrip("."), "image/png")
        with Image.open(io.BytesIO(data)) as head:  # reads the header only
            size = head.size
        return PreparedImage(data, mime, str(path), size, _sha256=Path(rel).stem)


def normalise_row(row: dict[str, Any], cmap: ColumnMap, store: ImageStore, base: Path, pid: str) -> Pair:
    """One input row -> a :class:`Pair`, storing its images. Raises :class:`PairError`."""
    if row.get("_bad"):
        raise PairError(str(row.get("_bad_kind") or "json"), row["_bad"])
    prompt = cmap.get(row, "prompt")
    if _is_empty(prompt) or not isinstance(prompt, str):
        raise PairError("prompt", f"missing or non-text prompt (column {cmap.columns.get('prompt')!r})")
    chosen, rejected = cmap.get(row, "chosen"), cmap.get(row, "rejected")
    if not _is_empty(chosen) or not _is_empty(rejected):
        if _is_empty(chosen) or _is_empty(rejected):
            raise PairError("image", "missing image: a chosen/rejected pair needs both columns")
        cell_a, cell_b, label = chosen, rejected, "A"
    else:
        cell_a, cell_b = cmap.get(row, "image_a"), cmap.get(row, "image_b")
        for side, cell in (("image_a", cell_a), ("image_b", cell_b)):
            if _is_empty(cell):
                raise PairError("image", f"missing image: {side} (column {cmap.columns.get(side)!r}) is empty")
        label = normalise_label(cmap.get(row, "label"), cmap.label_format)
    src = cmap.get(row, "source")
    sources = [] if _is_empty(src) else (list(src) if isinstance(src, (list, tuple)) else [src])
    task = cmap.get(row, "task")
    task = str(task).strip().lower() if not _is_empty(task) else ("edit" if sources else "t2i")
    if task not in ("t2i", "edit"):
        raise PairError("task", f"unknown task {task!r}; expected t2i or edit")
    if task == "edit" and not sources:
        raise PairError("image", "missing image: an edit pair needs a source image")
    if task == "t2i" and sources:
        raise PairError("task", "a t2i pair has a source image; set task to edit or drop the source")
    try:
        a = store.put(cell_a, base, "image_a")
        b = store.put(cell_b, base, "image_b")
        srcs = [store.put(s, base, f"source[{i}]" if len(sources) > 1 else "source") for i, s in enumerate(sources)]
    except ImageInputError as exc:
        raise PairError("image", str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise PairError("image", f"unusable image cell: {exc}") from None
    category = cmap.get(row, "category")
    return Pair(id=pid, task=task, prompt=prompt, image_a=a, image_b=b, label=label, source=srcs,
                category=None if _is_empty(category) else str(category))


def load_pairs(
    path: str | Path,
    out: str | Path,
    *,
    preset: str = "auto",
    columns: dict[str, str] | None = None,
    label_format: str = "auto",
    image_root: str | Path | None = None,
    split: str | None = None,
    limit: int | None = None,
    max_pixels: int | None = 802_816,
) -> tuple[list[Pair], list[dict[str, Any]]]:
    """Read and normalise every pair (no resumability; :class:`~.pipeline.Parrot` adds that).

    Returns ``(pairs, bad)`` where ``bad`` rows are ``{"id", "reason", "error"}``.
    """
    rows, base = iter_rows(path, split=split)
    first, rows = peek_good_row(rows)
    cmap = ColumnMap.build(preset, dict(columns or {}), label_format, first)
    store = ImageStore(out, max_pixels)
    pairs: list[Pair] = []
    bad: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        pid = row_id(row, cmap, i)
        if pid in seen:
            bad.append({"id": pid, "reason": "duplicate_id", "error": f"duplicate id {pid!r}"})
            continue
        seen.add(pid)
        try:
            pairs.append(normalise_row(row, cmap, store, Path(image_root) if image_root else base, pid))
        except PairError as exc:
            bad.append({"id": pid, "reason": exc.kind, "error": str(exc)})
    return pairs, bad


def file_digest(path: str | Path) -> str:
    """A cheap fingerprint of an input (size + mtime of every file), to notice a changed input."""
    p = Path(path)
    files = sorted(p.rglob("*")) if p.is_dir() else [p]
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(p) if p.is_dir() else f.name}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:16]
