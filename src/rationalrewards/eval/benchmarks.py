"""Benchmarks by name: each is a row adapter (source row -> canonical pair items) plus the name
of its official protocol.

A *pair item* is what the judge sees and what the protocols score: ``id``, ``task``, ``prompt``,
source image(s) for edits, ``image_a``, ``image_b``, the normalised ``label`` (``A``, ``B``,
``tie`` or ``bothbad``; ``None`` when the raw label was not understood), a ``category`` and, for
K-way rankings, the ``group`` the pair belongs to. Adapters run in two passes (see
:mod:`.sources`): in the light pass image columns are absent and only ids, labels and categories
matter; in the full pass the image cells are filled in.

Third parties add a benchmark with :func:`register_benchmark`.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..io import InputFileError
from .labels import Label, label_repr, normalize_label, parse_ranking
from .sources import Row

Task = Literal["t2i", "edit"]
_BASE64 = re.compile(r"[A-Za-z0-9+/\s]+={0,2}")
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")
ID_COLUMNS = ("id", "pair_id", "uid", "question_id", "key", "sample_id")
CATEGORY_COLUMNS = ("category", "subcategory", "sub_category", "task_type", "edit_type", "subtask", "type")


@dataclass
class PairItem:
    """One judged pair with its ground truth."""

    id: str
    task: Task
    prompt: str | None
    image_a: Any = None
    image_b: Any = None
    source: Any = None
    label: Label | None = None
    label_raw: Any = None
    category: str | None = None
    group: str | None = None
    base_dir: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Why this row cannot be judged (missing prompt or image cell): the run records an input
    # failure naming it instead of calling the model.
    problem: str | None = None

    def index_entry(self) -> dict[str, Any]:
        """The light, JSON-able part (what reports need without the images)."""
        return {"id": self.id, "task": self.task, "label": self.label, "label_raw": label_repr(self.label_raw),
                "category": self.category, "group": self.group, "prompt": self.prompt, "meta": self.meta}


Adapter = Callable[[Row, list[str], bool], list[PairItem]]


@dataclass(frozen=True)
class Benchmark:
    """A benchmark: how to read its rows and which protocol is its own.

    ``official`` names a protocol of :mod:`.protocols` (``4way``, ``both_orders``,
    ``group_tie_calibrated``, ``3way``...). ``required`` lists, per role, the accepted column
    names (the first one present is used); a dataset lacking every name of a role is refused
    with the columns it does have.
    """

    name: str
    description: str
    task: Task | None
    adapter: Adapter
    official: str
    required: dict[str, tuple[str, ...]] = field(default_factory=dict)
    default_swap: bool = False
    published: dict[str, float] = field(default_factory=dict)
    notes: str = ""

    def check_columns(self, columns: Sequence[str], where: str) -> None:
        present = set(columns)
        missing = [f"{role} ({' or '.join(names)})" for role, names in self.required.items()
                   if not any(n in present for n in names)]
        if missing:
            raise InputFileError(
                f"{where}: not in the {self.name} schema: missing column(s) {'; '.join(missing)}. "
                f"Columns present: {', '.join(columns) or '(none)'}"
            )


BENCHMARKS: dict[str, Benchmark] = {}


def register_benchmark(bench: Benchmark) -> Benchmark:
    """Add (or replace) a benchmark by name."""
    BENCHMARKS[bench.name] = bench
    return bench


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise InputFileError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}") from None


# -- cell helpers --------------------------------------------------------------------------------
def first_present(row: dict[str, Any], names: Sequence[str]) -> tuple[str | None, Any]:
    for n in names:
        if n in row:
            return n, row[n]
    return None, None


def row_id(row: Row) -> str:
    _, value = first_present(row.data, ID_COLUMNS)
    if value is None or value == "":
        return f"row-{row.index}"
    return str(value)


def category_of(row: Row) -> str | None:
    _, value = first_present(row.data, CATEGORY_COLUMNS)
    if value is None or value == "":
        return None
    return str(value)


def image_cell(value: Any) -> Any:
    """Normalise an image cell for the judge: HF dicts, bytes and paths pass through (the image
    loader understands them); ``data:`` URLs and bare base64 strings (JSON exports) become
    bytes. An empty cell is ``None``."""
    if value is None:
        return None
    if isinstance(value, dict):
        if value.get("bytes") is None and not value.get("path"):
            return None
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.startswith("data:"):
            _, _, payload = text.partition(",")
            try:
                return base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                return text  # the loader reports it with its own message
        if len(text) > 64 and _BASE64.fullmatch(text):
            # A long run of the base64 alphabet that decodes to image magic bytes is an inline
            # image; anything else stays a path (and the loader names it if it is missing).
            try:
                raw = base64.b64decode("".join(text.split()), validate=True)
            except (binascii.Error, ValueError):
                return text
            if raw.startswith(_IMAGE_MAGIC):
                return raw
        return text
    return value


def image_list(value: Any) -> list[Any]:
    """A cell that may hold one image or a list of them -> a list (empties removed)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [c for c in (image_cell(v) for v in value) if c is not None]
    cell = image_cell(value)
    return [] if cell is None else [cell]


def prompt_text(value: Any) -> str | None:
    """A prompt cell: a string, or interleaved content (list of strings / ``{"text": ...}``)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dict):
        return prompt_text(value.get("text") or value.get("content"))
    if isinstance(value, (list, tuple)):
        texts = [t for t in (prompt_text(v) for v in value) if t]
        return "\n".join(texts) or None
    return str(value)


def _single_image(row: Row, names: Sequence[str], light: bool, item_meta: dict[str, Any],
                  side: str) -> tuple[Any, str | None]:
    col, value = first_present(row.data, names)
    if light:
        return None, None
    if col is None:
        return None, f"{row.origin}: no {side} image column ({' or '.join(names)})"
    images = image_list(value)
    if not images:
        return None, f"{row.origin}: column {col!r} is empty"
    if len(images) > 1:
        # The reward model judges one image per side; the rest are noted, not silently lost.
        item_meta[f"{side}_images_ignored"] = len(images) - 1
    return images[0], None


def _make_pair(row: Row, *, task: Task, prompt_cols: Sequence[str], a_cols: Sequence[str], b_cols: Sequence[str],
               label_cols: Sequence[str], source_cols: Sequence[str] = (), light: bool) -> PairItem:
    meta: dict[str, Any] = {}
    problems: list[str] = []
    _, raw_prompt = first_present(row.data, prompt_cols)
    prompt = prompt_text(raw_prompt)
    if prompt is None:
        problems.append(f"{row.origin}: empty prompt ({' or '.join(prompt_cols)})")
    _, raw_label = first_present(row.data, label_cols)
    image_a, pa = _single_image(row, a_cols, light, meta, "a")
    image_b, pb = _single_image(row, b_cols, light, meta, "b")
    problems += [p for p in (pa, pb) if p]
    source: list[Any] | None = None
    if task == "edit" and not light:
        _, value = first_present(row.data, source_cols)
        source = image_list(value)
        if not source:
            problems.append(f"{row.origin}: no source image ({' or '.join(source_cols)})")
    return PairItem(
        id=row_id(row), task=task, prompt=prompt, image_a=image_a, image_b=image_b, source=source or None,
        label=normalize_label(raw_label), label_raw=raw_label, category=category_of(row),
        base_dir=row.base_dir, meta=meta, problem="; ".join(problems) or None,
    )


# -- adapters -----------------------------------------------------------------------------------
def _genai_t2i(row: Row, columns: list[str], light: bool) -> list[PairItem]:
    return [_make_pair(row, task="t2i", prompt_cols=("prompt",), a_cols=("left_image",), b_cols=("right_image",),
                       label_cols=("vote_type",), light=light)]


def _genai_edit(row: Row, columns: list[str], light: bool) -> list[PairItem]:
    item = _make_pair(row, task="edit", prompt_cols=("instruct_prompt", "instruction"), a_cols=("left_output_image",),
                      b_cols=("right_output_image",), label_cols=("vote_type",), source_cols=("source_image",),
                      light=light)
    for key in ("source_prompt", "target_prompt"):
        if row.data.get(key):
            item.meta[key] = row.data[key]
    return [item]


def _mmrb2(task: Task) -> Adapter:
    def adapt(row: Row, columns: list[str], light: bool) -> list[PairItem]:
        return [_make_pair(row, task=task, prompt_cols=("prompt_text", "prompt_content", "prompt"),
                           a_cols=("response_a_images", "response_a_image", "response_a"),
                           b_cols=("response_b_images", "response_b_image", "response_b"),
                           label_cols=("chosen",), source_cols=("prompt_images",), light=light)]

    return adapt


def _pairs(row: Row, columns: list[str], light: bool) -> list[PairItem]:
    if light:
        # Path strings survive the light pass; a binary source column is absent from it.
        has_source = ("source" in columns and "source" not in row.data) or row.data.get("source") not in (None, "", [])
    else:
        has_source = bool(image_list(row.data.get("source")))
    item = _make_pair(row, task="edit" if has_source else "t2i", prompt_cols=("prompt",), a_cols=("image_a",),
                      b_cols=("image_b",), label_cols=("label",), source_cols=("source",), light=light)
    group = row.data.get("group")
    item.group = None if group in (None, "") else str(group)
    return [item]


def _editreward(row: Row, columns: list[str], light: bool) -> list[PairItem]:
    """One row = one instruction with K candidates and a ranking -> all K(K-1)/2 pairs."""
    gid = row_id(row)
    _, raw_ranking = first_present(row.data, ("ranking", "rank", "human_ranking", "preference"))
    cand_cols = sorted((c for c in columns if c.startswith("candidate_") and c[len("candidate_"):].isdigit()),
                       key=lambda c: int(c[len("candidate_"):]))
    tiers = parse_ranking(raw_ranking)
    if tiers is None or sum(len(t) for t in tiers) < 2:
        # Without a readable ranking there is no ground truth (and no reliable K): one unknown-label
        # entry for the row, reported, never judged.
        return [PairItem(id=f"{gid}#?", task="edit", prompt=None, label=None, label_raw=raw_ranking,
                         category=category_of(row), group=gid, base_dir=row.base_dir)]
    k = sum(len(t) for t in tiers)
    _, raw_prompt = first_present(row.data, ("instruction", "prompt", "edit_instruction"))
    prompt = prompt_text(raw_prompt)
    problems: list[str] = []
    if prompt is None:
        problems.append(f"{row.origin}: empty instruction")
    if k > len(cand_cols):
        problems.append(f"{row.origin}: ranking {raw_ranking!r} names {k} candidates but only "
                        f"{len(cand_cols)} candidate_N columns exist")
    source: list[Any] = []
    if not light:
        _, src = first_present(row.data, ("source_image", "source", "input_image"))
        source = image_list(src)
        if not source:
            problems.append(f"{row.origin}: no source image")
    tier_of = {c: t for t, tier in enumerate(tiers) for c in tier}
    items = []
    for i, j in itertools.combinations(range(k), 2):
        label: Label = "A" if tier_of[i] < tier_of[j] else "B" if tier_of[i] > tier_of[j] else "tie"
        item_problems = list(problems)
        cells = []
        for idx in (i, j):
            col = f"candidate_{idx + 1}"
            cell = image_cell(row.data.get(col)) if not light else None
            if not light and cell is None:
                item_problems.append(f"{row.origin}: column {col!r} is empty")
            cells.append(cell)
        items.append(PairItem(
            id=f"{gid}#{i + 1}-{j + 1}", task="edit", prompt=prompt, image_a=cells[0], image_b=cells[1],
            source=source or None, label=label, label_raw=raw_ranking, category=category_of(row), group=gid,
            base_dir=row.base_dir, meta={"candidates": [i + 1, j + 1], "k": k},
            problem="; ".join(item_problems) or None,
        ))
    return items


PUBLISHED_NOTE = ("Published numbers (RationalRewards paper, Table of preference accuracy); the paper does not "
                  "fully state the protocol behind them, so compare with care.")

register_benchmark(Benchmark(
    name="genai-bench-t2i",
    description="GenAI-Bench text-to-image human votes (TIGER-Lab): prompt, left_image, right_image, vote_type.",
    task="t2i", adapter=_genai_t2i, official="4way",
    required={"prompt": ("prompt",), "image A": ("left_image",), "image B": ("right_image",), "label": ("vote_type",)},
    published={"RationalRewards-8B": 69.8, "Qwen3-VL-8B zero-shot": 55.1, "Qwen3-VL-32B": 66.9,
               "Gemini 2.5 Pro": 66.2, "GPT-4.1": 60.5},
))
register_benchmark(Benchmark(
    name="genai-bench-edit",
    description=("GenAI-Bench image-editing human votes (TIGER-Lab): instruct_prompt, source_image, "
                 "left_output_image, right_output_image, vote_type."),
    task="edit", adapter=_genai_edit, official="4way",
    required={"instruction": ("instruct_prompt", "instruction"), "source": ("source_image",),
              "image A": ("left_output_image",), "image B": ("right_output_image",), "label": ("vote_type",)},
    published={"RationalRewards-8B": 80.1, "Qwen3-VL-8B zero-shot": 50.1, "Qwen3-VL-32B": 76.3,
               "Gemini 2.5 Pro": 78.9, "GPT-4.1": 69.3},
))
register_benchmark(Benchmark(
    name="mmrb2-t2i",
    description="Multimodal RewardBench 2, text-to-image (Meta): prompt_text, response_a/b_images, chosen.",
    task="t2i", adapter=_mmrb2("t2i"), official="both_orders", default_swap=True,
    required={"prompt": ("prompt_text", "prompt_content", "prompt"),
              "image A": ("response_a_images", "response_a_image", "response_a"),
              "image B": ("response_b_images", "response_b_image", "response_b"), "label": ("chosen",)},
    published={"RationalRewards-8B": 64.2, "Qwen3-VL-8B zero-shot": 59.4, "Qwen3-VL-32B": 64.1,
               "Gemini 2.5 Pro": 70.5, "GPT-4.1": 65.8},
))
register_benchmark(Benchmark(
    name="mmrb2-edit",
    description="Multimodal RewardBench 2, image editing (Meta): prompt_text, prompt_images, response_a/b_images, chosen.",
    task="edit", adapter=_mmrb2("edit"), official="both_orders", default_swap=True,
    required={"prompt": ("prompt_text", "prompt_content", "prompt"), "source": ("prompt_images",),
              "image A": ("response_a_images", "response_a_image", "response_a"),
              "image B": ("response_b_images", "response_b_image", "response_b"), "label": ("chosen",)},
    published={"RationalRewards-8B": 70.3, "Qwen3-VL-8B zero-shot": 61.7, "Qwen3-VL-32B": 67.3,
               "Gemini 2.5 Pro": 71.3, "GPT-4.1": 68.2},
))
register_benchmark(Benchmark(
    name="editreward-bench",
    description=("EditReward-Bench (K = 2, 3 or 4 candidates per instruction): instruction, source_image, "
                 "candidate_1..K, ranking such as 'A>B=C'. Each row becomes all K(K-1)/2 pairs."),
    task="edit", adapter=_editreward, official="group_tie_calibrated",
    required={"instruction": ("instruction", "prompt", "edit_instruction"),
              "source": ("source_image", "source", "input_image"), "candidates": ("candidate_1",),
              "ranking": ("ranking", "rank", "human_ranking", "preference")},
    published={"RationalRewards-8B (K=2)": 66.2, "Qwen3-VL-8B zero-shot (K=2)": 51.9, "Qwen3-VL-32B (K=2)": 64.2,
               "Gemini 2.5 Pro (K=2)": 71.3, "GPT-4.1 (K=2)": 58.3},
    notes="Pin the dataset revision: an early release had conflicting duplicate rows.",
))
register_benchmark(Benchmark(
    name="pairs",
    description="Generic pairs: id, prompt, image_a, image_b, source?, label (A|B|tie), category?, group?.",
    task=None, adapter=_pairs, official="3way",
    required={"prompt": ("prompt",), "image A": ("image_a",), "image B": ("image_b",), "label": ("label",)},
))
