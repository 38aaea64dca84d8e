"""Prompt data for the RL trainer: JSONL rows become prompt groups keyed by prompt and source content.

A group is one prompt (and, for edits, its source image or images); the trainer samples
``group_size`` images per group and compares them with each other. Two rows with the same
instruction on different sources are two groups; the same instruction on the same source
content (even under another file name) is one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import InputFileError, read_jsonl

SOURCE_KEYS = ("source", "source_image", "source_images", "image_path", "image")


@dataclass(frozen=True)
class PromptRow:
    """One prompt group: the request, its source image(s) for edits, and the group key."""

    id: str
    prompt: str
    sources: tuple[str, ...]
    key: str

    @property
    def source(self) -> str | None:
        """The first source image (None for text-to-image rows)."""
        return self.sources[0] if self.sources else None


def group_key(prompt: str, source_sha256: str | Sequence[str] | None) -> str:
    """Groups are keyed by the prompt AND the source images' content: the same instruction on
    two different sources is two groups (several sources count in their order)."""
    if source_sha256 is not None and not isinstance(source_sha256, str):
        source_sha256 = ",".join(source_sha256)
    h = hashlib.sha256(prompt.encode("utf-8"))
    h.update(b"\0" + (source_sha256 or "").encode("ascii"))
    return h.hexdigest()[:24]


def load_prompt_rows(
    path: str | Path,
    *,
    task: str,
    prompt_key: str = "prompt",
    source_key: str | None = None,
    max_sources: int = 1,
) -> tuple[list[PromptRow], list[dict[str, Any]]]:
    """Read a prompt JSONL; returns (usable rows, skipped rows with a ``reason``).

    Edit rows need readable source images (``source_key``, or the first of
    source/source_image/source_images/image_path/image): one path, or a list of up to
    ``max_sources`` paths for pipelines that take several; paths are relative to the JSONL's
    folder. A row with a bad image is skipped with its reason, not fatal; no usable row at all is.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    rows = read_jsonl(path)
    out: list[PromptRow] = []
    skipped: list[dict[str, Any]] = []
    for row in rows:
        line = row.get("_line")
        rid = str(row.get("id") if row.get("id") not in (None, "") else f"line-{line}")
        prompt = row.get(prompt_key)
        if not isinstance(prompt, str) or not prompt.strip():
            skipped.append({"id": rid, "line": line, "reason": f"missing or empty {prompt_key!r}"})
            continue
        paths: list[str] = []
        shas: list[str] = []
        if task == "edit":
            keys = [source_key] if source_key else list(SOURCE_KEYS)
            value = next((row[k] for k in keys if row.get(k) not in (None, "", [])), None)
            values = value if isinstance(value, list) else [value]
            if value is None or not all(isinstance(v, str) and v for v in values):
                skipped.append({"id": rid, "line": line, "reason": f"edit row needs a source image path (or a list "
                                                                    f"of paths) in {keys}"})
                continue
            if len(values) > max_sources:
                skipped.append({"id": rid, "line": line, "reason": f"{len(values)} source images, but this pipeline "
                                                                    f"takes at most {max_sources}"})
                continue
            bad = None
            for v in values:
                p = Path(v).expanduser()
                if not p.is_absolute():
                    p = path.parent / p
                try:
                    data = p.read_bytes()
                    with Image.open(p) as img:
                        img.verify()
                except (OSError, UnidentifiedImageError) as exc:
                    bad = f"unreadable source image {str(p)!r}: {exc}"
                    break
                paths.append(str(p))
                shas.append(hashlib.sha256(data).hexdigest())
            if bad is not None:
                skipped.append({"id": rid, "line": line, "reason": bad})
                continue
        out.append(PromptRow(id=rid, prompt=prompt, sources=tuple(paths), key=group_key(prompt, shas or None)))
    if not out:
        reasons = "; ".join(f"{s['id']}: {s['reason']}" for s in skipped[:3])
        raise InputFileError(f"{path}: no usable prompt rows" + (f" ({reasons})" if reasons else ""))
    return out, skipped


def open_source(path: str) -> Any:
    """A source image as RGB PIL (opened when its group is sampled, not kept in memory)."""
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")
