"""Phase 3 data: kept rationales -> the student's SFT set, in two formats.

Each kept pairwise rationale becomes one example (the student's pairwise prompt, WITHOUT the
label -> the rationale); each kept pointwise unit becomes two (the pointwise prompt of image A ->
its critique, and the same for B). Prompts come from the core ``build_messages``, i.e. exactly
what the student sees at inference. Pairs are split into train / validation by a hash of the pair
id, so a pair never lands in both.

Layout (image paths are relative to the file that lists them)::

    sft/manifest.json
    sft/trl/{train,validation}.jsonl        {"id", "pair_id", "kind", "task", "messages", "images"}
    sft/sharegpt/{train,validation}.jsonl   {"messages": [{"role", "content"}], "images": [...]}
    sft/sharegpt/dataset_info.json          LLaMA-Factory registration (dataset_dir = sft/sharegpt)

TRL rows use structured content (``{"type": "text", "text"}`` / ``{"type": "image"}`` parts) with
``images`` in placeholder order, the layout TRL's vision collator expects; sharegpt rows use plain
strings with ``<image>`` placeholders, the layout LLaMA-Factory expects.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..critique.prompts import TemplateSet, build_messages, neutralize_request, render_text
from .checks import LeakDetector
from .config import ParrotConfig
from .data import Pair

SPLITS = ("train", "validation")
SFT_VERSION = 1


def split_of(pair_id: str, val_fraction: float, seed: int = 0) -> str:
    """``validation`` for a stable ``val_fraction`` of pair ids, else ``train``."""
    if val_fraction <= 0:
        return "train"
    h = int(hashlib.sha256(f"{seed}:{pair_id}".encode()).hexdigest()[:8], 16) / 2**32
    return "validation" if h < val_fraction else "train"


def _trl_content(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [{"type": "text", "text": p["text"]} if p["type"] == "text" else {"type": "image"} for p in content]


def student_examples(pair: Pair, row: dict[str, Any], judge: TemplateSet) -> list[dict[str, Any]]:
    """Examples of one kept filtered row: ``{"id", "kind", "messages", "images"}`` with image
    paths relative to the output folder (messages in the internal format)."""
    out = []
    src = pair.source or None
    if row["kind"] == "pairwise":
        shown = [pair.image_a, pair.image_b] if row.get("order", "AB") == "AB" else [pair.image_b, pair.image_a]
        msgs = build_messages(pair.task, "pairwise", pair.prompt, shown, src, judge)
        out.append({"id": row["key"], "kind": "pairwise", "messages": msgs, "target": row["rationale"]})
    else:
        for side, image in (("A", pair.image_a), ("B", pair.image_b)):
            msgs = build_messages(pair.task, "pointwise", pair.prompt, [image], src, judge)
            out.append({"id": f"{row['key']}|{side}", "kind": "pointwise", "messages": msgs,
                        "target": row[f"rationale_{side.lower()}"]})
    return out


def prompt_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(m["content"] for m in render_text(messages))


class _Writers:
    """Temporary files for every (format, split), renamed into place together at the end."""

    def __init__(self, root: Path):
        self.root = root
        self.files: dict[tuple[str, str], Any] = {}
        self.final: dict[tuple[str, str], Path] = {}
        for fmt in ("trl", "sharegpt"):
            (root / fmt).mkdir(parents=True, exist_ok=True)
            for split in SPLITS:
                path = root / fmt / f"{split}.jsonl"
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                self.files[fmt, split] = tmp.open("w", encoding="utf-8")
                self.final[fmt, split] = path

    def write(self, fmt: str, split: str, row: dict[str, Any]) -> None:
        self.files[fmt, split].write(json.dumps(row, ensure_ascii=False) + "\n")

    def commit(self) -> None:
        for key, fh in self.files.items():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            os.replace(fh.name, self.final[key])

    def abort(self) -> None:
        for fh in self.files.values():
            fh.close()
            Path(fh.name).unlink(missing_ok=True)


def build_sft(
    out: str | Path,
    pairs: dict[str, Pair],
    filtered: Iterable[dict[str, Any]],
    cfg: ParrotConfig,
    judge: TemplateSet,
    guard: LeakDetector,
) -> dict[str, Any]:
    """Write ``out/sft`` and return its manifest (also saved as ``sft/manifest.json``)."""
    from ..io import atomic_write_json

    out = Path(out)
    root = out / "sft"
    s = cfg.sft
    counts = {split: Counter() for split in SPLITS}
    pair_sets: dict[str, set[str]] = {split: set() for split in SPLITS}
    dropped: Counter[str] = Counter()
    writers = _Writers(root)
    skeletons: dict[str, bool] = {}

    def mentions_preference(messages: list[dict[str, Any]], request: str) -> bool:
        # The template part of a prompt repeats for every example: check it once, and the
        # request (the only free text) every time.
        text = prompt_text(messages)
        neutral = neutralize_request(request)
        skeleton = text.replace(neutral, "")
        if skeleton not in skeletons:
            skeletons[skeleton] = bool(guard.find(skeleton))
        return skeletons[skeleton] or bool(guard.find(neutral))

    try:
        for row in filtered:
            if not row.get("kept"):
                continue
            if (row["kind"] == "pairwise" and not s.pairwise) or (row["kind"] == "pointwise" and not s.pointwise):
                continue
            pair = pairs.get(row["id"])
            if pair is None:
                dropped["pair_missing"] += 1
                continue
            split = split_of(pair.id, s.val_fraction, s.split_seed)
            for ex in student_examples(pair, row, judge):
                if mentions_preference(ex["messages"], pair.prompt):
                    # The request itself reads like a label statement; a student prompt must
                    # never carry one, so the example goes rather than the guarantee.
                    dropped["prompt_mentions_preference"] += 1
                    continue
                images = [p["image"] for m in ex["messages"] if not isinstance(m["content"], str)
                          for p in m["content"] if p["type"] == "image"]
                for fmt in ("trl", "sharegpt"):
                    rel = [os.path.relpath(out / p, root / fmt).replace(os.sep, "/") for p in images]
                    if fmt == "trl":
                        msgs = [{"role": m["role"], "content": _trl_content(m["content"])} for m in ex["messages"]]
                        msgs.append({"role": "assistant", "content": [{"type": "text", "text": ex["target"]}]})
                        rec = {"id": ex["id"], "pair_id": pair.id, "kind": ex["kind"], "task": pair.task,
                               "messages": msgs, "images": rel}
                    else:
                        msgs = [*render_text(ex["messages"]), {"role": "assistant", "content": ex["target"]}]
                        rec = {"messages": msgs, "images": rel}
                    writers.write(fmt, split, rec)
                counts[split][ex["kind"]] += 1
                pair_sets[split].add(pair.id)
    except BaseException:
        writers.abort()
        raise
    writers.commit()
    info = {
        f"parrot_{split}": {
            "file_name": f"{split}.jsonl",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                     "assistant_tag": "assistant", "system_tag": "system"},
        }
        for split in SPLITS
    }
    atomic_write_json(root / "sharegpt" / "dataset_info.json", info)
    manifest = {
        "format_version": SFT_VERSION,
        "image_paths": "relative to the file that lists them",
        "templates": judge.name,
        "val_fraction": s.val_fraction,
        "split_seed": s.split_seed,
        "files": {fmt: {split: f"{fmt}/{split}.jsonl" for split in SPLITS} for fmt in ("trl", "sharegpt")},
        "counts": {split: {"pairwise": counts[split]["pairwise"], "pointwise": counts[split]["pointwise"],
                           "examples": sum(counts[split].values()), "pairs": len(pair_sets[split])}
                   for split in SPLITS},
        "dropped": dict(sorted(dropped.items())),
    }
    if s.save_hf_dataset:
        manifest["hf_dataset"] = "hf"
        save_hf_dataset(root, root / "hf")
    atomic_write_json(root / "manifest.json", manifest)
    return manifest


def _trl_file(sft_dir: Path, split: str) -> Path:
    manifest = sft_dir / "manifest.json"
    rel = f"trl/{split}.jsonl"
    if manifest.is_file():
        rel = json.loads(manifest.read_text(encoding="utf-8")).get("files", {}).get("trl", {}).get(split, rel)
    return sft_dir / rel


def load_sft_dataset(sft_dir: str | Path, split: str = "train") -> Any:
    """The TRL export of one split as a ``datasets.Dataset`` (images decoded lazily to PIL).

    Rows: ``messages`` (structured content), ``images`` (``datasets.Image`` list) plus ``id``,
    ``pair_id``, ``kind``, ``task``. Pass it straight to TRL's ``SFTTrainer``.
    """
    import datasets

    sft = Path(sft_dir)
    if (sft / "sft" / "manifest.json").is_file():  # given the run folder instead of DIR/sft
        sft = sft / "sft"
    path = _trl_file(sft, split)
    if not path.is_file():
        raise FileNotFoundError(f"no {split} split at {path}; run `rationalrewards parrot build-sft` first")
    base = path.parent.resolve()
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                row["images"] = [str((base / p).resolve()) for p in row["images"]]
                rows.append(row)
    if not rows:
        return datasets.Dataset.from_dict({"id": [], "pair_id": [], "kind": [], "task": [], "messages": [],
                                           "images": []})
    ds = datasets.Dataset.from_list(rows)
    return ds.cast_column("images", datasets.List(datasets.Image()))


def save_hf_dataset(sft_dir: str | Path, dest: str | Path) -> None:
    """Save both splits as a self-contained ``DatasetDict`` (image bytes embedded) for
    ``datasets.load_from_disk``; larger on disk than the JSONL export, but portable."""
    import datasets

    sft = Path(sft_dir)
    parts = {}
    for split in SPLITS:
        ds = load_sft_dataset(sft, split)
        if len(ds):
            parts[split] = ds
    dd = datasets.DatasetDict(parts)
    dd.save_to_disk(str(dest))
