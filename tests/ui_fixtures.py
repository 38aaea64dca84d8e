"""Small runs of every stage for the UI and report tests, made through the stages' Python APIs.

The judge is the demo world's scripted teacher with no noise (it reports exactly the defects each
image has), the images are the world's, and the generator is the world's: no model, no server,
a few seconds in all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rationalrewards.ui.samples import Examples, demo_reward_model, write_examples


def examples(folder: Path) -> Examples:
    return write_examples(folder)


def judge() -> Any:
    """A RewardModel over the noiseless scripted demo judge."""
    return demo_reward_model(noise=0.0)


def eval_run(folder: Path, ex: Examples) -> Path:
    """A finished ``pairs`` evaluation: 4 pairs, one of them judged wrong, one of them an edit."""
    from rationalrewards.eval import evaluate

    data = folder / "pairs.jsonl"
    rows = [
        {"id": "good-first", "prompt": ex.t2i_request, "image_a": str(ex.t2i_good), "image_b": str(ex.t2i_flawed),
         "label": "A", "category": "objects"},
        # People preferred the flawed image: the judge disagrees, so this pair is "wrong".
        {"id": "people-disagree", "prompt": ex.t2i_request, "image_a": str(ex.t2i_good),
         "image_b": str(ex.t2i_flawed), "label": "B", "category": "objects"},
        {"id": "flawed-first", "prompt": ex.t2i_request, "image_a": str(ex.t2i_flawed), "image_b": str(ex.t2i_good),
         "label": "B", "category": "text"},
        {"id": "edit-pair", "prompt": ex.edit_request, "image_a": str(ex.edit_good), "image_b": str(ex.edit_unchanged),
         "source": str(ex.edit_source), "label": "A", "category": "edit"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = folder / "eval-run"
    rm = judge()
    try:
        evaluate(rm, "pairs", data, out, concurrency=2, report={"bootstrap": 50})
    finally:
        rm.close()
    return out


def refine_run(folder: Path, ex: Examples) -> Path:
    """A refine batch of one t2i and one edit item, with the best-of-N baseline."""
    from PIL import Image

    from rationalrewards.demo.generator import DemoGenerator
    from rationalrewards.demo.world import attach_scene, scene_of
    from rationalrewards.refine import RefineConfig, refine_batch

    # The refine loop stores its own copy of the source; the demo judge recognises it by its
    # pixels once the scene is recorded for them in this process.
    with Image.open(ex.edit_source) as src:
        attach_scene(src.convert("RGB"), scene_of(ex.edit_source))
    items = folder / "refine-items.jsonl"
    items.write_text(
        json.dumps({"id": "t2i-item", "prompt": "A yellow triangle next to two blue circles and the word MAP",
                    "seed": 1}) + "\n"
        + json.dumps({"id": "edit-item", "prompt": ex.edit_request, "source": str(ex.edit_source)}) + "\n",
        encoding="utf-8")
    out = folder / "refine-run"
    refine_batch(items, out, generator=DemoGenerator(size=96), critic=judge(),
                 config=RefineConfig(rounds=2, candidates=2, threshold=None, patience=None, baseline=True))
    return out


def curate_run(folder: Path, ex: Examples) -> Path:
    """A curation of four images with a reward threshold: two kept, two rejected."""
    from rationalrewards.curate import Thresholds, curate

    items = folder / "curate-items.jsonl"
    rows = [
        {"id": "good", "prompt": ex.t2i_request, "image": str(ex.t2i_good)},
        {"id": "flawed", "prompt": ex.t2i_request, "image": str(ex.t2i_flawed)},
        {"id": "edit-good", "prompt": ex.edit_request, "image": str(ex.edit_good), "source": str(ex.edit_source)},
        {"id": "edit-unchanged", "prompt": ex.edit_request, "image": str(ex.edit_unchanged),
         "source": str(ex.edit_source)},
    ]
    items.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = folder / "curate-run"
    rm = judge()
    try:
        curate(items, out, reward_model=rm, thresholds=Thresholds(min_reward=0.8))
    finally:
        rm.close()
    return out


def all_runs(folder: Path) -> dict[str, Path]:
    ex = examples(folder / "examples")
    return {"eval": eval_run(folder, ex), "refine": refine_run(folder, ex), "curate": curate_run(folder, ex),
            "examples": ex.t2i_good.parent}


def demo_report(folder: Path, ex: Examples) -> Path:
    """The demo's report over a hand-made run folder: held-out pairs judged by the student, one
    rationale PARROT rejected, and a summary with the numbers the report prints."""
    import shutil

    from rationalrewards.demo.layout import RunFolder
    from rationalrewards.demo.report import write_report

    out = folder / "demo-run"
    for split in ("heldout", "train"):
        world = out / "world" / split
        world.mkdir(parents=True)
        for p in (ex.t2i_good, ex.t2i_flawed, ex.edit_source, ex.edit_good, ex.edit_unchanged):
            shutil.copy(p, world / p.name)
        pairs = [{"id": "h1", "prompt": ex.t2i_request, "image_a": "t2i_good.png", "image_b": "t2i_flawed.png",
                  "label": "A", "category": "t2i"},
                 {"id": "h2", "prompt": ex.edit_request, "source": "edit_source.png", "image_a": "edit_unchanged.png",
                  "image_b": "edit_good.png", "label": "B", "category": "edit"}]
        (world / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs), encoding="utf-8")
    (out / "world" / "heldout" / "truth.jsonl").write_text(
        json.dumps({"id": "h1", "defects_a": [], "defects_b": ["color", "noise", "misspelled"]}) + "\n", encoding="utf-8")
    (out / "eval" / "student").mkdir(parents=True)
    (out / "eval" / "student" / "results.jsonl").write_text(
        json.dumps({"id": "h1", "prediction": "A", "label": "A", "orders": [{"raw": "Image A is better."}]}) + "\n"
        + json.dumps({"id": "h2", "prediction": "A", "label": "B", "orders": [{"raw": "Image A is better."}]}) + "\n",
        encoding="utf-8")
    (out / "parrot").mkdir()
    (out / "parrot" / "filtered.jsonl").write_text(json.dumps(
        {"key": "k2", "id": "h2", "kind": "pairwise", "reason": "repredict_wrong", "shown_label": "B"}) + "\n",
        encoding="utf-8")
    (out / "parrot" / "anchored.jsonl").write_text(json.dumps({"key": "k2", "raw": "Image B is better."}) + "\n",
                                                   encoding="utf-8")
    summary = {
        "command": "rationalrewards demo --quick", "machine": {"cpus": 2}, "timing_s": {"world": 1.0},
        "targets": {"student accuracy above the always-A baseline": {"value": 0.71, "op": ">=", "bound": 0.6,
                                                                       "met": True}},
        "notes": [],
        "parrot": {"pairwise": {"rationales": 10, "kept": 7, "rejected": 3,
                                "rejected_by_reason": {"repredict_wrong": 2, "inconsistent": 1}}},
        "filter": {"teacher_noise": 0.3, "raw_error_rate": 0.3, "kept_error_rate": 0.1},
        "student": {"accuracy": 0.71, "n": 2, "n_failed": 0, "by_category": {"t2i": {"n": 1, "accuracy": 1.0}},
                    "train": {"train_loss": 0.225, "global_step": 10, "seconds": 3.0}, "model": {}},
        "teacher_reference": {"accuracy": 0.8, "by_category": {"t2i": {"accuracy": 1.0}}},
        "refine": {"items": []},
    }
    path = out / "report.html"
    write_report(RunFolder(out, {"stages": {}}), summary, path)
    return path
