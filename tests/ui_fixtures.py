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
