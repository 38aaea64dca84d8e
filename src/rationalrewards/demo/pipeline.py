"""The end-to-end demo: the whole system, learning, offline, on two CPU cores.

    from rationalrewards.demo import DemoConfig, run_demo
    summary = run_demo(DemoConfig.preset(quick=True, out="runs/demo-quick"))
    print(summary["student"]["accuracy"], summary["student"]["parse_rate"])

Stages, each over one folder ``DIR`` and each skipped when already done with the same settings:

1. ``world``   - preference pairs from the world's generator (train and held-out), refinement
                 prompts, and the compact judge templates (``DIR/world``, ``DIR/templates``);
2. ``parrot``  - PARROT phases 1-3 (anchor, filter, build-sft) with the scripted teacher, through
                 :class:`rationalrewards.parrot.Parrot` (``DIR/parrot``), and the error rates of the
                 raw and the kept rationales measured against the world's truth;
3. ``student`` - a tiny Qwen3-VL built locally (tokenizer trained on the world's vocabulary) and
                 trained from scratch by :func:`rationalrewards.parrot.train_student`
                 (``DIR/student``);
4. ``eval``    - :func:`rationalrewards.eval.evaluate` with the ``pairs`` benchmark on the held-out
                 pairs, for the student and, as a reference, for the noisy teacher (``DIR/eval``);
5. ``refine``  - Generate-Critique-Refine with the student as critic and the world's generator,
                 against best-of-N at equal generations (``DIR/refine``); the same with the noisy
                 teacher as critic, for scale (``DIR/refine-teacher``);
6. ``report``  - ``DIR/summary.json`` and ``DIR/report.html``.

A killed run restarted with the same arguments continues where it stopped: every stage is either
resumable itself (PARROT, training checkpoints, evaluation, refinement trajectories) or cheap and
deterministic (the world). ``DIR/demo_state.json`` records the settings and the finished stages;
a folder holding a run with other settings is refused rather than mixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, atomic_write_text
from .corpus import tokenizer_corpus
from .generator import ErrorRates, draw_scene
from .layout import REPORT_FILE, RUN_FOLDERS, STATE_FILE, SUMMARY_FILE, RunFolder
from .vision import VISION_MARKER, prepare_vision
from .world import (
    DIM_OF,
    Intent,
    Scene,
    dims_for,
    find_defects,
    parse_request,
    render_png,
    sample_task,
    text_applies,
    true_reward,
    true_scores,
    write_templates,
)

#: What the student starts from (see DemoConfig).
BASES = ("shipped", "rebuild", "scratch")
STAGES = ("world", "parrot", "student", "eval", "refine", "report")
SUMMARY_VERSION = 1

Log = Callable[[str], None]


class DemoError(RuntimeError):
    """The demo cannot run as asked (a folder holding another run, a missing dependency...)."""


@dataclass
class DemoConfig:
    """Every setting of a demo run. :meth:`preset` gives the default and the ``--quick`` budgets.

    World: ``train_pairs`` / ``eval_pairs`` preference pairs, ``refine_prompts`` requests to
    refine, ``edit_rate`` share of edit tasks, ``cue_rate`` chance that a prompt carries each
    explicitness cue, ``image_size`` pixels per side.
    Teacher and PARROT: ``teacher_noise`` (share of answers with one missed or hallucinated
    defect), ``rationalize`` (see :class:`~.teacher.DemoTeacher`), ``samples`` anchored rationales
    per pair, ``filter`` (False: train on the raw teacher output, the ablation), ``sft_kinds``
    which of PARROT's SFT examples the student learns from: ``pointwise`` (one image per
    critique, the judge ``eval_mode="pointwise"`` uses), ``pairwise`` or ``both`` (the paper's mix).
    Student: ``base`` is what SFT starts from: ``"shipped"`` (the pretrained base committed with
    the package, :mod:`.base`), ``"rebuild"`` (pretrain a base afresh with the shipped recipe
    and this run's seed, in ``DIR/student/base-build``), the path of a folder :func:`.base.pretrain_base`
    wrote, or ``"scratch"`` (the earlier design: a
    language model from random initialisation over a pretrained vision tower; ``hidden_size``,
    ``num_layers``, ``vocab_size`` and ``vision_pretrain_*`` apply only to it). Optimiser
    settings, ``max_steps`` optimiser steps of ``batch_size`` examples, ``max_new_tokens`` for
    greedy decoding; ``sft_trainer`` ``"lean"`` (:mod:`.sft`: the same recipe without per-step
    image processing, frozen-tower passes and trainer bookkeeping) or ``"trl"`` (``parrot
    train`` itself); ``curve_points`` checkpoints of SFT evaluated on the first ``curve_pairs``
    held-out pairs (the learning curve; 0 turns it off); ``zero_shot`` also evaluates the base
    as a judge before PARROT; ``eval_mode`` how every judge of the run decides a held-out pair:
    ``pairwise`` (one joint judgement of both images) or ``pointwise`` (each image critiqued
    alone, the higher reward wins: how a reward model is used in RL and refinement).
    Refinement: ``refine_rounds`` rounds after round 0 with ``refine_candidates`` images each.
    """

    out: str = "runs/demo"
    quick: bool = False
    seed: int = 0
    train_pairs: int = 1000
    eval_pairs: int = 400
    refine_prompts: int = 16
    edit_rate: float = 0.25
    cue_rate: float = 0.2
    image_size: int = 96
    teacher_noise: float = 0.3
    rationalize: float = 0.5
    samples: int = 1
    anchor_orders: str = "both"
    select: str = "all"
    filter: bool = True
    sft_kinds: str = "pointwise"
    base: str = "shipped"
    hidden_size: int = 128
    num_layers: int = 2
    vision_pretrain_steps: int = 500
    vision_pretrain_images: int = 3000
    vocab_size: int = 1024
    learning_rate: float = 1e-3
    batch_size: int = 8
    max_steps: int = 1200
    warmup_ratio: float = 0.03
    max_new_tokens: int = 240
    sft_trainer: str = "lean"
    eval_batch_size: int = 16
    eval_mode: str = "pointwise"
    curve_points: int = 2
    curve_pairs: int = 100
    zero_shot: bool = True
    refine_rounds: int = 2
    refine_candidates: int = 2
    teacher_reference: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def preset(cls, quick: bool = False, **overrides: Any) -> DemoConfig:
        """The default budget (about 10 minutes on two cores) or the ``--quick`` one (under 2)."""
        base: dict[str, Any] = {"quick": quick}
        if quick:
            # Measured (docs/demo.md): 150 steps on 200 pairs judge 0.58 of the quick held-out pairs,
            # 250 steps on 400 pairs 0.67, inside the 2-minute budget on two idle cores. One curve
            # point halfway.
            base.update(train_pairs=400, eval_pairs=60, refine_prompts=3, max_steps=250, learning_rate=2e-3,
                        refine_rounds=1, curve_points=1, curve_pairs=30, vision_pretrain_steps=100,
                        vision_pretrain_images=640)
        base.update({k: v for k, v in overrides.items() if v is not None})
        cfg = cls(**base)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise :class:`ValueError` naming the first bad setting."""
        positive = ("train_pairs", "eval_pairs", "image_size", "samples", "hidden_size", "num_layers", "vocab_size",
                    "batch_size", "max_steps", "max_new_tokens", "eval_batch_size", "refine_candidates")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sft_kinds not in ("both", "pairwise", "pointwise"):
            raise ValueError(f"sft_kinds must be 'both', 'pairwise' or 'pointwise', got {self.sft_kinds!r}")
        if self.eval_mode not in ("pairwise", "pointwise"):
            raise ValueError(f"eval_mode must be 'pairwise' or 'pointwise', got {self.eval_mode!r}")
        if self.sft_trainer not in ("lean", "trl"):
            raise ValueError(f"sft_trainer must be 'lean' or 'trl', got {self.sft_trainer!r}")
        if not self.base:
            raise ValueError(f"base must be one of {', '.join(BASES)} or a base model folder")
        for name in ("refine_prompts", "refine_rounds", "vision_pretrain_steps", "curve_points", "curve_pairs"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("edit_rate", "cue_rate", "teacher_noise", "rationalize", "warmup_ratio"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.vision_pretrain_steps and self.vision_pretrain_images < 64:
            raise ValueError(f"vision_pretrain_images must be >= 64, got {self.vision_pretrain_images}")
        if self.image_size < 32:
            raise ValueError("image_size must be at least 32 pixels (one visual token)")
        if self.hidden_size % 8:
            raise ValueError("hidden_size must be a multiple of 8")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Digest of the settings that shape results (``out`` excluded)."""
        d = self.to_json()
        d.pop("out", None)
        # Thread count changes speed, not what is computed; a resume may use another.
        d["extra"] = {k: v for k, v in d["extra"].items() if k != "threads"}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode("utf-8")).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------
# Stage 1: the world's data
# ------------------------------------------------------------------------------------------------


def _category(intent: Intent, a: Scene, b: Scene) -> str:
    """What separates the two images: the dimension with the largest true score gap."""
    sa, sb = true_scores(intent, a), true_scores(intent, b)
    gaps = {k: abs((sa[k] or 0.0) - (sb[k] or 0.0)) for k in sa if sa[k] is not None and sb[k] is not None}
    dim = max(gaps, key=lambda k: (gaps[k], k)) if gaps else "text_faithfulness"
    name = {"text_faithfulness": "instruction" if intent.task == "edit" else "objects",
            "image_faithfulness": "preservation", "physical_quality": "artefacts", "text_rendering": "text"}[dim]
    return f"{intent.task}/{name}"


def make_pairs(folder: str | Path, n: int, *, seed: int, split: str, edit_rate: float = 0.25, cue_rate: float = 0.2,
               image_size: int = 96, rates: ErrorRates | None = None) -> dict[str, Any]:
    """Write ``n`` preference pairs of the world to ``folder``.

    Each pair is one request and two images the generator drew for it with different seeds; the
    label is the image with the higher *true* reward (pairs whose images tie are redrawn with
    other seeds, or skipped). Files: ``pairs.jsonl`` (the ``pairs`` benchmark columns ``id,
    prompt, image_a, image_b, source?, label, category``, read by PARROT and ``eval`` alike),
    ``truth.jsonl`` (scenes, defects and true rewards, for measurements), ``images/``.
    Deterministic: the same arguments write the same files.
    """
    out = Path(folder)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"demo-pairs:{seed}:{split}")
    rows, truth = [], []
    skipped = 0
    for i in range(n):
        task = sample_task(rng, f"{split}-{i:04d}", edit_rate=edit_rate, cue_rate=cue_rate)
        src = task.intent.source
        first = rng.randrange(1_000_000)
        intent, scene_a = draw_scene(task.prompt, source=src, seed=first, rates=rates)
        ra = true_reward(intent, scene_a)
        scene_b = None
        for k in range(1, 16):
            _, cand = draw_scene(task.prompt, source=src, seed=first + k, rates=rates)
            if abs(true_reward(intent, cand) - ra) > 1e-6:
                scene_b = cand
                break
        if scene_b is None:
            skipped += 1
            continue
        if rng.random() < 0.5:
            scene_a, scene_b = scene_b, scene_a
        rel = {side: f"images/{task.id}_{side}.png" for side in ("a", "b")}
        _write_if_changed(out / rel["a"], render_png(scene_a, image_size))
        _write_if_changed(out / rel["b"], render_png(scene_b, image_size))
        ra, rb = true_reward(intent, scene_a), true_reward(intent, scene_b)
        row: dict[str, Any] = {"id": task.id, "prompt": task.prompt, "image_a": rel["a"], "image_b": rel["b"],
                               "label": "A" if ra > rb else "B", "category": _category(intent, scene_a, scene_b)}
        if src is not None:
            rel_src = f"images/{task.id}_src.png"
            _write_if_changed(out / rel_src, render_png(src, image_size))
            row["source"] = rel_src
        rows.append(row)
        truth.append({"id": task.id, "task": task.task, "prompt": task.prompt,
                      "source": src.to_json() if src is not None else None,
                      "scene_a": scene_a.to_json(), "scene_b": scene_b.to_json(), "reward_a": ra, "reward_b": rb,
                      "defects_a": [d.code for d in find_defects(intent, scene_a)],
                      "defects_b": [d.code for d in find_defects(intent, scene_b)]})
    _write_jsonl(out / "pairs.jsonl", rows)
    _write_jsonl(out / "truth.jsonl", truth)
    return {"pairs": len(rows), "skipped_ties": skipped, "labels": dict(Counter(r["label"] for r in rows)),
            "by_category": dict(sorted(Counter(r["category"] for r in rows).items()))}


def make_refine_items(folder: str | Path, n: int, *, seed: int, edit_rate: float = 0.25, cue_rate: float = 0.0,
                      image_size: int = 96) -> list[dict[str, Any]]:
    """Requests to refine (``refine.jsonl``: ``id, prompt, source?``), written casually (no cues)
    so that the generator errs often enough for refinement to have work."""
    out = Path(folder)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"demo-refine:{seed}")
    items = []
    for i in range(n):
        task = sample_task(rng, f"refine-{i:02d}", edit_rate=edit_rate, cue_rate=cue_rate)
        item: dict[str, Any] = {"id": task.id, "prompt": task.prompt, "seed": 1000 * (i + 1)}
        if task.intent.source is not None:
            rel = f"images/{task.id}_src.png"
            _write_if_changed(out / rel, render_png(task.intent.source, image_size))
            item["source"] = rel
        items.append(item)
    _write_jsonl(out / "refine.jsonl", items)
    return items


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# ------------------------------------------------------------------------------------------------
# Stage 2: PARROT measurements
# ------------------------------------------------------------------------------------------------


def _truth_index(path: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in _read_jsonl(path)}


def _intent_of(t: dict[str, Any]) -> Intent:
    src = Scene.from_json(t["source"]) if t.get("source") else None
    return parse_request(t["prompt"], src)


def rationale_errors(parrot_dir: str | Path, truth_path: str | Path) -> dict[str, Any]:
    """How often the teacher's rationales are wrong, before and after PARROT's filter.

    A rationale is *wrong* when the defects its text claims for some image differ from the
    image's true defects (a miss or a hallucination). Raw: every parseable anchored rationale
    (pairwise answers and pointwise A+B critique pairs, all samples). Kept: the rationales the
    filter kept. Also counted: rationales whose own scores contradict the label.
    """
    from ..critique.parser import parse_comparison, parse_critique
    from .teacher import claimed_defects

    truth = _truth_index(Path(truth_path))
    pdir = Path(parrot_dir)
    anchored = {r["key"]: r for r in _read_jsonl(pdir / "anchored.jsonl")} if (pdir / "anchored.jsonl").is_file() else {}
    filtered = _read_jsonl(pdir / "filtered.jsonl") if (pdir / "filtered.jsonl").is_file() else []

    def wrong_pairwise(pid: str, order: str | None, text: str) -> bool:
        t = truth[pid]
        intent = _intent_of(t)
        claims = claimed_defects(text, intent)
        shown = ("a", "b") if order != "BA" else ("b", "a")
        return any(sorted(d.code for d in claims.get(side, [])) != sorted(t[f"defects_{src}"])
                   for side, src in zip(("A", "B"), shown, strict=True))

    def wrong_pointwise(pid: str, side: str, text: str) -> bool:
        t = truth[pid]
        claims = claimed_defects(text, _intent_of(t)).get("image", [])
        return sorted(d.code for d in claims) != sorted(t[f"defects_{side.lower()}"])

    raw = Counter()
    contradicts = Counter()
    units: dict[str, list[dict[str, Any]]] = {}
    for key, row in anchored.items():
        if not row.get("generated") or row["id"] not in truth:
            continue
        if row["kind"] == "pairwise":
            res = parse_comparison(row["raw"], row["task"])
            if not res.ok:
                continue
            raw["pairwise"] += 1
            raw["pairwise_wrong"] += wrong_pairwise(row["id"], row.get("order"), row["raw"])
            contradicts["pairwise"] += res.winner != row.get("shown_label")
        else:
            units.setdefault(key.rsplit("|", 1)[0], []).append(row)
    for rows in units.values():
        if len(rows) != 2:
            continue
        crit = {r["side"]: parse_critique(r["raw"], r["task"]) for r in rows}
        if not all(c.ok for c in crit.values()):
            continue
        raw["pointwise"] += 1
        raw["pointwise_wrong"] += any(wrong_pointwise(r["id"], r["side"], r["raw"]) for r in rows)
        label = rows[0]["label"]
        ra, rb = crit["A"].reward or 0.0, crit["B"].reward or 0.0
        contradicts["pointwise"] += ("A" if ra > rb else "B" if rb > ra else "tie") != label
    kept = Counter()
    for row in filtered:
        if not row.get("kept") or row["id"] not in truth:
            continue
        if row["kind"] == "pairwise":
            kept["pairwise"] += 1
            kept["pairwise_wrong"] += wrong_pairwise(row["id"], row.get("order"), row.get("rationale", ""))
        else:
            kept["pointwise"] += 1
            kept["pointwise_wrong"] += (wrong_pointwise(row["id"], "A", row.get("rationale_a", ""))
                                        or wrong_pointwise(row["id"], "B", row.get("rationale_b", "")))

    def rate(c: Counter, kinds: tuple[str, ...]) -> float | None:
        n = sum(c[k] for k in kinds)
        return round(sum(c[f"{k}_wrong"] for k in kinds) / n, 4) if n else None

    both = ("pairwise", "pointwise")
    return {
        "definition": "share of rationales whose claimed defects differ from the true defects of some image",
        "raw": {"n": raw["pairwise"] + raw["pointwise"], "error_rate": rate(raw, both),
                "pairwise": rate(raw, ("pairwise",)), "pointwise": rate(raw, ("pointwise",)),
                "scores_contradict_label": round((contradicts["pairwise"] + contradicts["pointwise"])
                                                 / max(1, raw["pairwise"] + raw["pointwise"]), 4)},
        "kept": {"n": kept["pairwise"] + kept["pointwise"], "error_rate": rate(kept, both),
                 "pairwise": rate(kept, ("pairwise",)), "pointwise": rate(kept, ("pointwise",))},
    }


def claim_accuracy(eval_dir: str | Path, truth_path: str | Path, *, ids: set[str] | None = None) -> dict[str, Any]:
    """Per critique dimension, how often a judge's claims about an image are exactly right.

    For every held-out judgement in ``eval_dir`` (an ``eval`` output folder) and each of its two
    judged images, the defects its justification claims on a dimension are compared with the
    image's true defects on that dimension (both "nothing wrong" counts as right). Tells where a
    judge fails: seeing artefacts, matching objects to the request, reading the word, edits.
    ``majority`` is the score of always writing the most common true claim, the floor a judge
    that has learnt nothing about that dimension reaches. ``ids`` restricts it to those pairs.
    """
    from ..critique.model import POINTWISE_SEPARATOR
    from .teacher import claimed_defects

    truth = _truth_index(Path(truth_path))
    path = Path(eval_dir) / "results.jsonl"
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    truths_seen: dict[str, Counter[tuple[str, ...]]] = {}
    for row in _read_jsonl(path) if path.is_file() else []:
        if ids is not None and row.get("id") not in ids:
            continue
        t = truth.get(row.get("id"))
        order = (row.get("orders") or [{}])[0]
        if t is None or not order.get("raw"):
            continue
        intent = _intent_of(t)
        raw = order["raw"]
        if POINTWISE_SEPARATOR in raw:  # pointwise mode: one critique per image
            part_a, _, part_b = raw.partition(POINTWISE_SEPARATOR)
            claims = {"A": claimed_defects(part_a, intent).get("image", []),
                      "B": claimed_defects(part_b, intent).get("image", [])}
        else:
            claims = claimed_defects(raw, intent)
        shown = ("a", "b") if order.get("order", "AB") == "AB" else ("b", "a")
        for side, key in zip(("A", "B"), shown, strict=True):
            for dim in dims_for(intent):
                if dim == "text_rendering" and not text_applies(intent):
                    continue
                task_dim = f"{intent.task}/{dim}"
                true_codes = sorted(c for c in t[f"defects_{key}"] if DIM_OF[c] == dim)
                total[task_dim] += 1
                right[task_dim] += sorted(d.code for d in claims.get(side, []) if d.dim == dim) == true_codes
                truths_seen.setdefault(task_dim, Counter())[tuple(true_codes)] += 1
    # majority: what a judge that always writes the most common true claim would score.
    return {k: {"n": total[k], "accuracy": round(right[k] / total[k], 4),
                "majority": round(truths_seen[k].most_common(1)[0][1] / total[k], 4)} for k in sorted(total)}


def unfiltered_rows(parrot: Any) -> list[dict[str, Any]]:
    """Rows in ``filtered.jsonl`` form that keep every parseable anchored rationale of sample 0:
    the raw teacher output, for the no-filter ablation (PARROT's own files are left untouched)."""
    from ..critique.parser import parse_comparison, parse_critique
    from ..parrot.prompts import clean_rationale

    anchored = {r["key"]: r for r in _read_jsonl(parrot.anchored_path)}
    rows = []
    for pair in parrot.usable(parrot.pairs()):
        for unit in parrot.units(pair):
            if unit.sample != 0:
                continue
            got = [anchored.get(k) for k in unit.anchored]
            if any(g is None or not g.get("generated") for g in got):
                continue
            row: dict[str, Any] = {"key": unit.key, "id": pair.id, "kind": unit.kind, "sample": 0, "task": pair.task,
                                   "label": pair.label, "kept": True, "reason": None, "reasons": [], "unfiltered": True}
            if unit.kind == "pairwise":
                raw = got[0]["raw"]  # type: ignore[index]
                if not parse_comparison(raw, pair.task).ok:
                    continue
                row.update(order=unit.order, shown_label=unit.shown_label, rationale=clean_rationale(raw))
            else:
                by_side = {g["side"]: g["raw"] for g in got}  # type: ignore[index]
                if not all(parse_critique(by_side[s], pair.task).ok for s in ("A", "B")):
                    continue
                row.update(rationale_a=clean_rationale(by_side["A"]), rationale_b=clean_rationale(by_side["B"]))
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------
# Stage 5: refinement measurements
# ------------------------------------------------------------------------------------------------


def _true_of(prompt: str, request: str, source: Scene | None, seed: int, rates: ErrorRates | None) -> float:
    """True reward, against the ORIGINAL prompt, of the image the generator drew for (request, seed)."""
    intent = parse_request(prompt, source)
    _, scene = draw_scene(request, source=source, seed=seed, rates=rates)
    return true_reward(intent, scene)


def request_quality(prompt: str, request: str, source: Scene | None, rates: ErrorRates | None = None,
                    draws: int = 64) -> float:
    """Expected true reward (against ``prompt``) of an image the generator draws for ``request``,
    estimated over ``draws`` fixed seeds (the same seeds for every request, so comparisons are paired)."""
    return round(sum(_true_of(prompt, request, source, 10_000 + i, rates) for i in range(draws)) / draws, 4)


def trajectory_metrics(traj: Any, source: Scene | None, rates: ErrorRates | None = None) -> dict[str, Any]:
    """Student and true rewards of round 0's best, the final best and best-of-N's best.

    The generator is deterministic in (request, seed), so the scene behind every image of the
    trajectory is recomputed here and scored by the world's truth.
    """
    out: dict[str, Any] = {"id": traj.id, "prompt": traj.prompt, "rounds": len(traj.rounds),
                           "generations": traj.usage.generator_calls, "stop_reason": traj.stop_reason,
                           "error": traj.error}
    r0 = traj.rounds[0] if traj.rounds else None

    def cand_true(request: str, cand: Any) -> float:
        return _true_of(traj.prompt, request, source, cand.seed, rates)

    if r0 is not None and r0.round_best is not None:
        c = r0.candidates[r0.round_best]
        out["round0"] = {"student": c.reward, "true": cand_true(r0.request, c)}
        out["round0_mean_true"] = round(sum(cand_true(r0.request, x) for x in r0.candidates) / len(r0.candidates), 6)
    if traj.best is not None:
        best = traj.best
        cand = traj.rounds[best.round].candidates[best.candidate]
        out["final"] = {"student": best.reward, "true": cand_true(best.request, cand), "round": best.round,
                        "request": best.request}
    base = traj.baseline
    if base is not None and base.best is not None:
        bc = next(c for c in base.candidates if c.index == base.best.candidate)
        out["best_of_n"] = {"student": base.best.reward, "true": cand_true(traj.prompt, bc),
                            "generations": base.generations}
    # Per round: the mean true reward of what the generator drew for that round's request.
    out["round_true_mean"] = [round(sum(cand_true(r.request, c) for c in r.candidates) / max(1, len(r.candidates)), 6)
                              for r in traj.rounds]
    # What a request is worth, free of sampling luck: the mean true reward of many draws for it.
    out["request_quality"] = {"original": request_quality(traj.prompt, traj.prompt, source, rates)}
    if traj.best is not None:
        out["request_quality"]["final"] = request_quality(traj.prompt, traj.best.request, source, rates)
    out["requests"] = [r.request for r in traj.rounds]
    return out


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def summarize_refinement(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the refined requests (student-judged and true rewards)."""
    out: dict[str, Any] = {"n": len(metrics)}
    for who in ("student", "true"):
        out[f"{who}_reward"] = {
            "round0_best": _mean([m.get("round0", {}).get(who) for m in metrics]),
            "final_best": _mean([m.get("final", {}).get(who) for m in metrics]),
            "best_of_n": _mean([m.get("best_of_n", {}).get(who) for m in metrics]),
        }
    out["true_reward"]["round0_mean"] = _mean([m.get("round0_mean_true") for m in metrics])
    rounds = max((len(m.get("round_true_mean") or []) for m in metrics), default=0)
    out["true_reward"]["per_round_mean"] = [_mean([(m.get("round_true_mean") or [None] * rounds)[r]
                                                   if r < len(m.get("round_true_mean") or []) else None
                                                   for m in metrics]) for r in range(rounds)]
    out["request_quality"] = {
        "definition": "mean true reward of 64 draws of the generator for the request, against the original request",
        "original": _mean([(m.get("request_quality") or {}).get("original") for m in metrics]),
        "final": _mean([(m.get("request_quality") or {}).get("final") for m in metrics]),
    }
    out["generations"] = {"refine": sum(m.get("generations") or 0 for m in metrics),
                          "best_of_n": sum((m.get("best_of_n") or {}).get("generations") or 0 for m in metrics)}
    out["improved_over_round0"] = sum(1 for m in metrics if (m.get("final", {}).get("true") or 0)
                                      > (m.get("round0", {}).get("true") or 0))
    out["errors"] = [m["error"] for m in metrics if m.get("error")]
    return out


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


class DemoRun(RunFolder):
    """One demo run over ``cfg.out`` (see the module docstring for the stages; the folder's
    layout is :class:`~.layout.RunFolder`).

    Args:
        cfg: the settings (:meth:`DemoConfig.preset`).
        log: receives one-line progress messages (the CLI prints them on stderr).
        overwrite: start afresh in a folder that holds a run with other settings (its demo files
            are replaced; nothing else in the folder is touched).
    """

    def __init__(self, cfg: DemoConfig, *, log: Log | None = None, overwrite: bool = False):
        cfg.validate()
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.log = log or (lambda _m: None)
        self.rates = ErrorRates()
        self._student: Any = None
        super().__init__(cfg.out, self._load_state(overwrite))

    # -- state ----------------------------------------------------------------------------------
    def _load_state(self, overwrite: bool) -> dict[str, Any]:
        path = self.out / STATE_FILE
        fresh = {"fingerprint": self.cfg.fingerprint(), "config": self.cfg.to_json(), "stages": {}}
        if not path.is_file():
            return fresh
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = None
        if isinstance(state, dict) and state.get("fingerprint") == fresh["fingerprint"]:
            state.setdefault("stages", {})
            return state
        if not overwrite:
            raise DemoError(f"{self.out} holds a demo run with other settings; use another --out (or --overwrite)")
        for name in RUN_FOLDERS:
            shutil.rmtree(self.out / name, ignore_errors=True)
        for name in (STATE_FILE, SUMMARY_FILE, REPORT_FILE):
            (self.out / name).unlink(missing_ok=True)
        return fresh

    def _save_state(self) -> None:
        atomic_write_json(self.out / STATE_FILE, self.state)

    def done(self, stage: str) -> bool:
        return bool(self.state["stages"].get(stage, {}).get("done"))

    def _finish(self, stage: str, seconds: float, result: dict[str, Any]) -> dict[str, Any]:
        self.state["stages"][stage] = {"done": True, "seconds": round(seconds, 2), "result": result}
        self._save_state()
        return result

    # -- stages ---------------------------------------------------------------------------------
    def world(self) -> dict[str, Any]:
        """Stage 1: templates, train and held-out pairs, refinement requests."""
        cfg = self.cfg
        write_templates(self.templates_dir)
        common = {"edit_rate": cfg.edit_rate, "cue_rate": cfg.cue_rate, "image_size": cfg.image_size, "rates": self.rates}
        train = make_pairs(self.world_dir / "train", cfg.train_pairs, seed=cfg.seed, split="train", **common)
        heldout = make_pairs(self.world_dir / "heldout", cfg.eval_pairs, seed=cfg.seed, split="heldout", **common)
        items = make_refine_items(self.world_dir / "refine", cfg.refine_prompts, seed=cfg.seed, edit_rate=cfg.edit_rate,
                                  image_size=cfg.image_size)
        train_prompts = {r["prompt"] for r in _read_jsonl(self.world_dir / "train" / "pairs.jsonl")}
        overlap = sum(1 for r in _read_jsonl(self.world_dir / "heldout" / "pairs.jsonl") if r["prompt"] in train_prompts)
        return {"train": train, "heldout": heldout, "refine_prompts": len(items), "heldout_prompts_seen_in_train": overlap,
                "generator_rates": self.rates.to_json()}

    def parrot(self) -> dict[str, Any]:
        """Stage 2: PARROT anchor -> filter -> build-sft with the scripted teacher."""
        from ..parrot.config import ParrotConfig
        from ..parrot.pipeline import Parrot
        from .teacher import DemoTeacher

        cfg = self.cfg
        pcfg = ParrotConfig.from_mapping({
            "pairs": str(self.world_dir / "train" / "pairs.jsonl"),
            "out": str(self.parrot_dir),
            "teacher": {"templates": str(self.templates_dir), "concurrency": 16, "model": "demo-teacher"},
            "anchor": {"samples": cfg.samples, "seed": cfg.seed, "orders": cfg.anchor_orders},
            "filter": {"select": cfg.select},
            "sft": {"val_fraction": 0.0, "pairwise": cfg.sft_kinds in ("both", "pairwise"),
                    "pointwise": cfg.sft_kinds in ("both", "pointwise")},
        })
        teacher = DemoTeacher(noise=cfg.teacher_noise, rationalize=cfg.rationalize, seed=cfg.seed)
        p = Parrot(pcfg, backend=teacher, log=self.log)
        if cfg.filter:
            stats = p.run()
            manifest = json.loads((self.parrot_dir / "sft" / "manifest.json").read_text(encoding="utf-8"))
        else:
            stats = p.run(("ingest", "anchor", "filter"))
            from ..parrot.checks import LeakDetector
            from ..parrot.sft import build_sft

            manifest = build_sft(self.parrot_dir, {pp.id: pp for pp in p.pairs()}, unfiltered_rows(p), pcfg, p.judge,
                                 LeakDetector(pcfg.filter.leak_patterns))
        errors = rationale_errors(self.parrot_dir, self.world_dir / "train" / "truth.jsonl")
        filt = stats.get("filter", {})
        return {
            "teacher": teacher.describe(),
            "filter_used": cfg.filter,
            "anchored_calls": stats.get("anchor", {}).get("calls"),
            "repredict_calls": filt.get("repredict_calls"),
            "pairwise": _pick(filt.get("pairwise", {}), ("rationales", "kept", "rejected", "rejected_by_reason", "keep_rate")),
            "pointwise": _pick(filt.get("pointwise", {}), ("rationales", "kept", "rejected", "rejected_by_reason",
                                                          "keep_rate")),
            "sft_examples": manifest.get("counts", {}).get("train", {}),
            "rationale_errors": errors,
        }

    def student(self) -> dict[str, Any]:
        """Stage 3: the base the student starts from, then SFT on PARROT's data with ``parrot train``."""
        from ..parrot.config import TrainConfig
        from ..parrot.train import train_student

        cfg = self.cfg
        threads = _set_threads(cfg)
        self.log(f"demo: torch uses {threads} thread(s)")
        base = self.student_root / "base"
        base_info = self._prepare_base(base)
        n_curve = max(1, cfg.curve_points + 1)
        if cfg.sft_trainer == "lean":
            from .sft import LeanSFTConfig, lean_sft

            summary = lean_sft(LeanSFTConfig(
                model=str(base), data=str(self.parrot_dir / "sft"), out=str(self.student_dir),
                learning_rate=cfg.learning_rate, warmup_ratio=cfg.warmup_ratio, max_steps=cfg.max_steps,
                batch_size=cfg.batch_size, save_steps=max(1, cfg.max_steps // n_curve),
                keep_checkpoints=bool(cfg.curve_points), seed=cfg.seed, max_pixels=cfg.image_size * cfg.image_size),
                log=self.log)
            return {"base": str(base), "trainer": "lean", **base_info,
                    **_pick(summary, ("train_examples", "trainable_params", "train_loss", "global_step", "seconds",
                                      "resumed_from", "device", "prep_seconds", "train_seconds",
                                      "examples_per_second"))}
        tc = TrainConfig(
            model=str(base), data=str(self.parrot_dir / "sft"), out=str(self.student_dir), lora=False,
            freeze_vision=True, learning_rate=cfg.learning_rate, lr_scheduler="cosine", warmup_ratio=cfg.warmup_ratio,
            weight_decay=0.0, epochs=1000.0, max_steps=cfg.max_steps, per_device_batch_size=cfg.batch_size,
            grad_accum=1, max_length=None, max_pixels=cfg.image_size * cfg.image_size, bf16=False,
            # Checkpoints double as the learning curve's points (every one is kept for the eval stage).
            gradient_checkpointing=False, save_steps=max(1, cfg.max_steps // n_curve),
            save_total_limit=None if cfg.curve_points else 1,
            logging_steps=max(10, cfg.max_steps // 10), eval=False, seed=cfg.seed, resume="auto",
        )
        t_train = time.perf_counter()
        summary = train_student(tc, log=self.log)
        seconds = time.perf_counter() - t_train
        return {"base": str(base), "trainer": "trl", **base_info,
                "examples_per_second": round(cfg.max_steps * cfg.batch_size / seconds, 2),
                **_pick(summary, ("train_examples", "trainable_params", "train_loss", "global_step",
                                  "seconds", "resumed_from", "device"))}

    def _prepare_base(self, base: Path) -> dict[str, Any]:
        """Put the model SFT starts from in ``base`` (see ``DemoConfig.base``); returns what it is."""
        from .base import HASH_FILE, STATS_FILE, BaseRecipe, pretrain_base, shipped_base, verify_base

        cfg = self.cfg
        if cfg.base == "scratch":
            return self._prepare_scratch_base(base)
        if not (base / HASH_FILE).is_file():
            if cfg.base == "shipped":
                src = shipped_base()
            elif cfg.base != "rebuild":
                src = Path(cfg.base)
                if not (src / HASH_FILE).is_file():
                    raise DemoError(f"base {src} is not a base model folder (no {HASH_FILE}); "
                                    f"use one of {', '.join(BASES)} or a folder written by pretrain_base")
            else:
                src = self.student_root / "base-build"
                self.log("demo: pretraining the base student (the shipped recipe, this run's seed)")
                pretrain_base(src, BaseRecipe(seed=cfg.seed), log=self.log, threads=_set_threads(cfg))
            # Copied into a temporary folder and renamed into place: a kill never leaves half a base.
            tmp = base.with_name(".base.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src, tmp)
            shutil.rmtree(base, ignore_errors=True)
            os.replace(tmp, base)
        sums = verify_base(base)
        stats = json.loads((base / STATS_FILE).read_text(encoding="utf-8"))
        conf = json.loads((base / "config.json").read_text(encoding="utf-8"))
        text = conf.get("text_config", conf)
        return {"base_kind": cfg.base, "base_sha256": sums.get("model.safetensors"),
                "model": {"hidden_size": text.get("hidden_size"), "num_layers": text.get("num_hidden_layers"),
                          "vocab_size": text.get("vocab_size"), "parameters": stats.get("parameters")},
                "base_pretraining": _pick(stats, ("data", "heldout_accuracy_before", "heldout_accuracy", "heldout_curve",
                                                  "vision_pretraining", "train_seconds", "examples_per_second")),
                "vision_pretraining": None}

    def _prepare_scratch_base(self, base: Path) -> dict[str, Any]:
        """The earlier design: a random language model over a pretrained, conditioned tower."""
        from ..testing.tiny_models import build_tiny_qwen3vl

        cfg = self.cfg
        random_init = build_tiny_qwen3vl(self.student_root / "random", seed=cfg.seed, vocab_size=cfg.vocab_size,
                                         hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                                         image_size_cap=cfg.image_size * cfg.image_size,
                                         corpus=tokenizer_corpus(cfg.seed))
        if not (base / VISION_MARKER).is_file():
            tmp = base.with_name(".base.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(random_init, tmp)
            prepare_vision(tmp, pretrain_steps=cfg.vision_pretrain_steps, images=cfg.vision_pretrain_images,
                           seed=cfg.seed, edit_rate=cfg.edit_rate, image_size=cfg.image_size, log=self.log)
            shutil.rmtree(base, ignore_errors=True)
            os.replace(tmp, base)
        vision = json.loads((base / VISION_MARKER).read_text(encoding="utf-8"))
        pre = vision.get("pretraining") or {}
        return {"base_kind": "scratch",
                "model": {"hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers, "vocab_size": cfg.vocab_size},
                "vision_pretraining": _pick(pre, ("steps", "images", "heldout_accuracy_before", "heldout_accuracy",
                                                  "seconds")) or None}

    def _student_model(self) -> Any:
        if self._student is None:
            self._student = self._judge(self.student_dir)
        return self._student

    def _judge(self, folder: Path) -> Any:
        """A greedy-decoding RewardModel over the checkpoint in ``folder`` with the demo's templates."""
        from ..backends import SamplingParams
        from ..critique.model import RewardModel

        cfg = self.cfg
        _set_threads(cfg)
        return RewardModel.from_pretrained(
            folder, device="cpu", dtype="float32", batch_size=cfg.eval_batch_size, templates=str(self.templates_dir),
            sampling=SamplingParams(temperature=0.0, max_tokens=cfg.max_new_tokens),
            max_pixels=cfg.image_size * cfg.image_size, concurrency=cfg.eval_batch_size)

    def evaluate(self) -> dict[str, Any]:
        """Stage 4: ``eval --benchmark pairs`` on the held-out pairs (student; teacher as reference)."""
        from ..backends import SamplingParams
        from ..critique.model import RewardModel
        from ..eval import evaluate
        from .teacher import DemoTeacher

        cfg = self.cfg
        data = str(self.world_dir / "heldout" / "pairs.jsonl")
        rm = self._student_model()
        report = evaluate(rm, "pairs", data, str(self.eval_dir / "student"), concurrency=cfg.eval_batch_size,
                          mode=cfg.eval_mode)
        truth = self.world_dir / "heldout" / "truth.jsonl"
        out: dict[str, Any] = {"student": {**_eval_summary(report, self.eval_dir / "student"),
                                           "claims": claim_accuracy(self.eval_dir / "student", truth)}}
        if cfg.zero_shot and cfg.base != "scratch":
            # The base as a judge before PARROT: same prompts, same pairs, same decoding.
            zs = self._judge(self.student_root / "base")
            try:
                rep_b = evaluate(zs, "pairs", data, str(self.eval_dir / "base"), concurrency=cfg.eval_batch_size,
                                 mode=cfg.eval_mode)
            finally:
                zs.close()
            out["base_zero_shot"] = {**_eval_summary(rep_b, self.eval_dir / "base"),
                                     "claims": claim_accuracy(self.eval_dir / "base", truth)}
        if cfg.curve_points:
            out["learning_curve"] = self._learning_curve(data, truth)
        if cfg.teacher_reference:
            teacher = RewardModel(DemoTeacher(noise=cfg.teacher_noise, seed=cfg.seed + 7), templates=str(self.templates_dir),
                                  sampling=SamplingParams(temperature=0.0, max_tokens=cfg.max_new_tokens, seed=0))
            rep_t = evaluate(teacher, "pairs", data, str(self.eval_dir / "teacher"), concurrency=32,
                             mode=cfg.eval_mode)
            teacher.close()
            out["teacher"] = {**_eval_summary(rep_t, self.eval_dir / "teacher"),
                              "claims": claim_accuracy(self.eval_dir / "teacher", truth)}
        return out

    def _learning_curve(self, data: str, truth: Path) -> dict[str, Any]:
        """Held-out accuracy and claims at each kept SFT checkpoint, on the first ``curve_pairs``
        held-out pairs; step 0 (the base) and the last step are read from the full evaluations."""
        from ..eval import evaluate

        cfg = self.cfg
        rows = _read_jsonl(Path(data))
        ids = [r["id"] for r in rows[:cfg.curve_pairs]]
        subset = Path(data).with_name("pairs_curve.jsonl")
        _write_jsonl(subset, rows[:cfg.curve_pairs])
        points = []
        if (self.eval_dir / "base" / "results.jsonl").is_file():
            points.append({"step": 0, **_subset_scores(self.eval_dir / "base", truth, ids)})
        ckpts = sorted((p for p in (self.student_dir / "checkpoints").glob("checkpoint-*") if p.is_dir()),
                       key=lambda p: int(p.name.rsplit("-", 1)[1]))
        final_step = int(self.result("student").get("global_step") or cfg.max_steps)
        for ckpt in ckpts:
            step = int(ckpt.name.rsplit("-", 1)[1])
            if step >= final_step:
                continue
            _ensure_processor_files(ckpt, self.student_root / "base")
            folder = self.eval_dir / "curve" / f"step-{step}"
            judge = self._judge(ckpt)
            try:
                evaluate(judge, "pairs", str(subset), str(folder), concurrency=cfg.eval_batch_size,
                         mode=cfg.eval_mode)
            finally:
                judge.close()
            points.append({"step": step, **_subset_scores(folder, truth, ids)})
        points.append({"step": final_step, **_subset_scores(self.eval_dir / "student", truth, ids)})
        return {"pairs": len(ids), "points": points}

    def refine(self) -> dict[str, Any]:
        """Stage 5: refine held-out requests with the student as critic (and, for scale, with the
        noisy teacher as critic); best-of-N at equal generations alongside."""
        cfg = self.cfg
        items = _read_jsonl(self.world_dir / "refine" / "refine.jsonl")
        if not items:
            return {"n": 0, "items": []}
        out = self._refine_with(self._student_model(), self.refine_dir, items)
        if cfg.teacher_reference:
            from ..backends import SamplingParams
            from ..critique.model import RewardModel
            from .teacher import DemoTeacher

            teacher = RewardModel(DemoTeacher(noise=cfg.teacher_noise, seed=cfg.seed + 11),
                                  templates=str(self.templates_dir), sampling=SamplingParams(temperature=0.0, seed=0))
            ref = self._refine_with(teacher, self.out / "refine-teacher", items)
            out["teacher_critic"] = {k: v for k, v in ref.items() if k != "items"}
        return out

    def _refine_with(self, critic: Any, folder: Path, items: list[dict[str, Any]]) -> dict[str, Any]:
        from ..refine.loop import RefineConfig, RefineInputError, RefineLoop
        from .generator import DemoGenerator
        from .world import scene_of

        cfg = self.cfg
        rcfg = RefineConfig(rounds=cfg.refine_rounds, candidates=cfg.refine_candidates, threshold=None, patience=None,
                            baseline=True, seed=0)
        loop = RefineLoop(DemoGenerator(cfg.image_size, self.rates), critic, rcfg)

        async def one(item: dict[str, Any]) -> Any:
            src = str(self.world_dir / "refine" / item["source"]) if item.get("source") else None
            try:
                return await loop.arun(item["prompt"], folder / item["id"], source=src, id=item["id"],
                                       seed=int(item["seed"]))
            except RefineInputError as exc:
                self.log(f"refine {item['id']} failed: {exc}")
                return None

        async def go() -> list[Any]:
            return list(await asyncio.gather(*(one(it) for it in items)))

        trajs = asyncio.run(go())
        metrics = []
        for item, traj in zip(items, trajs, strict=True):
            if traj is None:
                metrics.append({"id": item["id"], "prompt": item["prompt"], "error": "refinement input error"})
                continue
            src = scene_of(self.world_dir / "refine" / item["source"]) if item.get("source") else None
            metrics.append(trajectory_metrics(traj, src, self.rates))
        critiques = [c for t in trajs if t is not None for r in t.rounds for c in r.candidates]
        critiques += [c for t in trajs if t is not None and t.baseline is not None for c in t.baseline.candidates]
        parsed = sum(1 for c in critiques if c.ok)
        return {**summarize_refinement(metrics), "rounds": cfg.refine_rounds, "candidates": cfg.refine_candidates,
                "critiques": len(critiques),
                "critique_parse_rate": round(parsed / len(critiques), 4) if critiques else None, "items": metrics}

    def report(self) -> dict[str, Any]:
        """Stage 6: ``summary.json`` and ``report.html``."""
        from .report import build_summary, write_report

        # The report reads the folder (state file and stage outputs), never this module.
        folder = RunFolder(self.out, self.state)
        summary = build_summary(folder)
        atomic_write_json(self.out / SUMMARY_FILE, summary)
        write_report(folder, summary, self.out / REPORT_FILE)
        return {"summary": str(self.out / SUMMARY_FILE), "report": str(self.out / REPORT_FILE)}

    # -- driver ---------------------------------------------------------------------------------
    def run(self, stages: tuple[str, ...] = STAGES) -> dict[str, Any]:
        """Run the given stages (in order; those done already are skipped) and return the summary,
        or, when ``report`` is not among them, ``{stage: result}`` of the stages run."""
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
        self.out.mkdir(parents=True, exist_ok=True)
        self._save_state()
        t_start = time.perf_counter()
        try:
            for stage in (s for s in STAGES if s in stages):
                if stage != "report" and self.done(stage):
                    self.log(f"demo: {stage} already done, skipped")
                    continue
                self.log(f"demo: {stage} ...")
                t0 = time.perf_counter()
                # Libraries print progress and logs on stdout (the trainer's loss lines); stdout
                # belongs to the command's result (--json), so stage output goes to stderr.
                with contextlib.redirect_stdout(sys.stderr):
                    result = getattr(self, "evaluate" if stage == "eval" else stage)()
                self._finish(stage, time.perf_counter() - t0, result)
                self.log(f"demo: {stage} done in {time.perf_counter() - t0:.1f}s")
        finally:
            if self._student is not None:
                self._student.close()
                self._student = None
        self.state["last_run_seconds"] = round(time.perf_counter() - t_start, 2)
        self._save_state()
        if "report" not in stages:
            return {s: self.result(s) for s in stages}
        return json.loads((self.out / SUMMARY_FILE).read_text(encoding="utf-8"))


def _pick(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: d.get(k) for k in keys if k in d}


def _eval_summary(report: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Accuracy, parse rate and per-category accuracy of one ``eval`` report."""
    rows = _read_jsonl(folder / "results.jsonl") if (folder / "results.jsonl").is_file() else []
    n = len(rows)
    parse_fail = sum(1 for r in rows if not r.get("ok") and r.get("error_kind") == "parse")
    # A tie predicted for a pair whose images differ is wrong under 3way; how often the judge
    # commits, and how often it is right when it does, separate "cannot tell" from "wrong".
    decided = [r for r in rows if r.get("ok") and r.get("prediction") in ("A", "B")]
    right = sum(1 for r in decided if r.get("prediction") == r.get("label"))
    return {
        "benchmark": report.get("benchmark"), "protocol": report.get("protocol"), "n": report.get("n"),
        "n_failed": report.get("n_failed"), "accuracy": report.get("accuracy"),
        "accuracy_no_ties": report.get("accuracy_no_ties"), "ci95": report.get("ci95"),
        "parse_rate": round(1 - parse_fail / n, 4) if n else None,
        "decided_share": round(len(decided) / n, 4) if n else None,
        "accuracy_when_decided": round(right / len(decided), 4) if decided else None,
        "by_category": {k: _pick(v, ("n", "accuracy", "n_failed")) for k, v in (report.get("by_category") or {}).items()},
    }


def _ensure_processor_files(ckpt: Path, base: Path) -> None:
    """Trainer checkpoints may lack the processor files a RewardModel loads; copy the base's."""
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json",
                 "preprocessor_config.json", "video_preprocessor_config.json"):
        if (base / name).is_file() and not (ckpt / name).is_file():
            shutil.copy2(base / name, ckpt / name)


def wilson_ci(k: int, n: int, z: float = 1.96) -> list[float] | None:
    """Wilson score interval of a proportion ``k / n`` (95% by default)."""
    if n <= 0:
        return None
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / den
    return [round(max(0.0, mid - half), 4), round(min(1.0, mid + half), 4)]


def _subset_scores(eval_dir: Path, truth: Path, ids: list[str]) -> dict[str, Any]:
    """Accuracy (3way: a tie or failure is wrong), its Wilson 95% interval, decided share and claims
    of the eval output in ``eval_dir`` restricted to the pairs ``ids``."""
    want = set(ids)
    rows = [r for r in _read_jsonl(eval_dir / "results.jsonl") if r.get("id") in want]
    right = sum(1 for r in rows if r.get("ok") and r.get("prediction") == r.get("label"))
    decided = sum(1 for r in rows if r.get("ok") and r.get("prediction") in ("A", "B"))
    parsed = sum(1 for r in rows if r.get("ok"))
    n = len(rows)
    return {"n": n, "accuracy": round(right / n, 4) if n else None, "ci95": wilson_ci(right, n),
            "parse_rate": round(parsed / n, 4) if n else None, "decided_share": round(decided / n, 4) if n else None,
            "claims": {k: v["accuracy"] for k, v in claim_accuracy(eval_dir, truth, ids=want).items()}}


def _set_threads(cfg: DemoConfig) -> int:
    """torch threads for training and inference: ``extra["threads"]`` if set, else every core, or
    one when the machine is already busy. Measured on a shared 2-core machine: two threads that
    compete with other processes spin-wait and ran a training step 10-20x slower than one thread."""
    import torch

    threads = cfg.extra.get("threads")
    if not threads:
        cores = os.cpu_count() or 1
        try:
            busy = os.getloadavg()[0] >= cores - 0.5
        except OSError:  # not available on this platform
            busy = False
        threads = 1 if busy and cores <= 4 else cores
    torch.set_num_threads(int(threads))
    return int(threads)


def run_demo(cfg: DemoConfig, *, log: Log | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Run (or resume) the demo of ``cfg`` and return its summary (also in ``cfg.out/summary.json``)."""
    return DemoRun(cfg, log=log, overwrite=overwrite).run()
