"""The demo's pretrained base student: its data stream (generic vision-language tasks, never the
preference pairs), its recipe (runs end to end on a tiny budget, resumable, hashed), and the
shipped weights (present, intact, better than random on its own held-out tasks)."""

from __future__ import annotations

import json
import random

import pytest

from rationalrewards.demo.base_data import (
    STREAM,
    TASKS,
    base_examples,
    caption,
    differences,
    mismatches,
    perturb,
)
from rationalrewards.demo.pipeline import DemoConfig, make_pairs
from rationalrewards.demo.world import Obj, Scene, find_defects, sample_task


def _scene_key(scene: Scene) -> str:
    return json.dumps(scene.to_json(), sort_keys=True)


def test_the_stream_is_deterministic_and_covers_every_task():
    a, b = base_examples(300, seed=3), base_examples(300, seed=3)
    assert [x.to_json() for x in a] == [x.to_json() for x in b]
    assert {x.kind for x in a} == set(TASKS)
    assert base_examples(50, seed=4)[0].to_json() != a[0].to_json()
    assert all(x.id.startswith(f"{STREAM}-3-train-") for x in a)


#: The stream settings of the first shipped recipe and of the current one (request before the
#: images, one-attribute hard negatives, a mix weighted toward matching and edits).
STREAMS = [{}, {"text_first": True, "hard_negatives": 0.5,
                "weights": {"caption": 0.1, "qa": 0.15, "match": 0.4, "diff": 0.1, "edit": 0.25}}]


@pytest.mark.parametrize("stream", STREAMS, ids=["plain", "text-first-hard-negatives"])
def test_answers_describe_the_scenes_and_carry_no_preference_or_score(stream):
    for ex in base_examples(400, seed=0, **stream):
        assert len(ex.scenes) == (2 if ex.kind in ("diff", "edit") else 1)
        # Nothing of a judgement: no scores, winners or the critique headers.
        for banned in ("Score", "Winner", "better", "Justification", "Final verdict"):
            assert banned not in ex.answer
        if ex.kind == "caption":
            for o in ex.scenes[0].objects:
                assert f"{o.size} {o.color} {o.shape}" in ex.answer
        if ex.kind == "match":
            # "Yes." exactly when the world finds no defect against the request.
            from rationalrewards.demo.world import parse_request

            intent = parse_request(ex.meta["request"])
            assert (ex.answer == "Yes.") == (not find_defects(intent, ex.scenes[0]))
        if ex.kind in ("match", "edit") and stream.get("text_first"):
            # the request comes before the images, as in the judge's prompts
            assert ex.prefix == f"User Instruction: {ex.meta['request']}\n" and ex.meta["request"] not in ex.question


def test_a_hard_negative_changes_one_thing_that_the_answer_then_names():
    rng = random.Random(5)
    from rationalrewards.demo.generator import draw_scene

    for i in range(300):
        task = sample_task(rng, f"t{i}", edit_rate=0.0)
        _intent, scene = draw_scene(task.prompt, seed=i)
        changed = perturb(scene, random.Random(i))
        assert changed != scene
        # one object recoloured / resized / dropped / added, or the word: at most two slot lines
        # (a move empties one slot and fills another)
        assert 1 <= len(differences(scene, changed)) <= 2
    mixed = base_examples(600, seed=0, hard_negatives=0.5)
    plain = base_examples(600, seed=0)
    hard = [i for i, ex in enumerate(mixed) if ex.meta.get("hard_negative")]
    assert hard and all(mixed[i].kind in ("match", "edit") for i in hard)
    assert 0.3 < len(hard) / sum(ex.kind in ("match", "edit") for ex in mixed) < 0.7
    # the rest of the stream does not move: hard negatives draw from their own random stream
    assert all(mixed[i].to_json() == plain[i].to_json() for i in range(600) if i not in set(hard))
    assert sum(mixed[i].answer.startswith("No") for i in hard) >= 0.9 * len(hard)
    with pytest.raises(ValueError, match="task weights"):
        base_examples(3, weights={"caption": 1.0, "chat": 1.0})


def test_mismatches_and_differences_name_what_is_wrong_concretely():
    scene = Scene((Obj("circle", "blue", "small", "left"), Obj("square", "red", "large", "right")), "CAP", ("noise",))
    from rationalrewards.demo.world import parse_request

    intent = parse_request('A small red circle on the left and a yellow triangle, with the word "CAT" written below')
    got = mismatches(intent, scene)
    assert "the circle is blue, not red" in got
    assert "the yellow triangle is missing" in got
    assert "there is an extra red square" in got
    assert "the word reads CAP, not CAT" in got and "the image is noisy" in got
    before = Scene((Obj("circle", "red", "small", "left"),), "SUN")
    after = Scene((Obj("circle", "blue", "small", "left"), Obj("square", "green", "large", "right")), "SUN")
    assert differences(before, after) == ["the circle on the left turned from red to blue",
                                          "a large green square was added on the right"]
    assert caption(before).startswith("Left: a small red circle. Middle: nothing. Right: nothing. Word: SUN.")


@pytest.mark.parametrize("stream", STREAMS, ids=["plain", "text-first-hard-negatives"])
def test_the_pretraining_data_is_not_the_preference_pairs(tmp_path, stream):
    # Different seed namespaces: the base stream never replays the pairs' random draws.
    pair_rng, base_rng = random.Random("demo-pairs:0:train"), random.Random(f"{STREAM}:0:train")
    assert [pair_rng.random() for _ in range(8)] != [base_rng.random() for _ in range(8)]
    make_pairs(tmp_path / "train", 200, seed=0, split="train")
    make_pairs(tmp_path / "heldout", 200, seed=0, split="heldout")
    truth = [json.loads(line) for split in ("train", "heldout")
             for line in (tmp_path / split / "truth.jsonl").read_text().splitlines()]
    pair_items = {(t["prompt"], json.dumps(t[k], sort_keys=True)) for t in truth for k in ("scene_a", "scene_b")}
    examples = base_examples(3000, seed=0, **stream)
    same = [ex for ex in examples if (ex.meta["request"], _scene_key(ex.scenes[-1])) in pair_items]
    # The world is small (a few thousand distinct scenes), so a request and image can coincide by
    # chance; that happens for well under 1% of examples and none of them carries a label: no
    # example ever shows two candidate images of one request.
    assert len(same) <= 0.005 * len(examples)
    assert all(ex.kind in ("diff", "edit") or len(ex.scenes) == 1 for ex in examples)
    assert not any(ex.meta["request"] == t["prompt"] and ex.kind in ("diff", "edit")
                   and _scene_key(ex.scenes[0]) == json.dumps(t["scene_a"], sort_keys=True)
                   and _scene_key(ex.scenes[1]) == json.dumps(t["scene_b"], sort_keys=True) for ex in examples
                   for t in truth[:50])


def test_the_demo_config_names_its_base():
    assert DemoConfig.preset().base == "shipped"
    assert DemoConfig.preset(base="scratch").base == "scratch"
    with pytest.raises(ValueError, match="sft_trainer"):
        DemoConfig.preset(sft_trainer="fast")
    # Held-out pairs are judged image by image by default (the base never saw two candidates at once).
    assert DemoConfig.preset().eval_mode == DemoConfig.preset(quick=True).eval_mode == "pointwise"
    with pytest.raises(ValueError, match="eval_mode"):
        DemoConfig.preset(eval_mode="joint")


def test_the_base_describes_a_mismatch_in_the_words_the_teacher_critiques_with():
    # The base's "does the image follow the request?" answers and the teacher's justifications name
    # a defect the same way, so PARROT's SFT builds on what the base already says.
    from rationalrewards.demo.base_data import differences, mismatches
    from rationalrewards.demo.world import Obj, Scene, find_defects, parse_request

    intent = parse_request("A small red circle on the left and the word CAT written below")
    scene = Scene((Obj("circle", "blue", "large", "right"),), "CAP", ("noise",))
    assert mismatches(intent, scene) == [d.detail for d in find_defects(intent, scene)] == [
        "the circle is blue, not red", "the blue circle is large, not small",
        "the blue circle is on the right, not on the left", "the word reads CAP, not CAT", "the image is noisy"]
    src = Scene((Obj("circle", "red", "large", "left"),))
    edit = parse_request("Change the red circle to green", src)
    assert [d.detail for d in find_defects(edit, src)] == differences(edit.edit.apply(src), src) == [
        "the circle on the left turned from green to red"]
    # the sample tasks the base draws are the world's own
    assert sample_task(random.Random(0), "x").prompt


@pytest.mark.slow
def test_the_recipe_runs_on_a_tiny_budget_resumes_and_is_hashed(tmp_path):
    from rationalrewards.demo.base import (
        HASH_FILE,
        RECIPE_FILE,
        STATS_FILE,
        BaseModelError,
        BaseRecipe,
        pretrain_base,
        verify_base,
    )

    recipe = BaseRecipe.tiny()
    stats = pretrain_base(tmp_path / "base", recipe, threads=1)
    folder = tmp_path / "base"
    for name in ("model.safetensors", "config.json", "tokenizer.json", RECIPE_FILE, STATS_FILE, HASH_FILE):
        assert (folder / name).is_file(), name
    assert json.loads((folder / RECIPE_FILE).read_text()) == recipe.to_json()
    assert stats["data"]["stream"] == f"{STREAM}:{recipe.seed}"
    assert set(stats["heldout_accuracy"]) == {*TASKS, "all"}
    assert stats["history"][-1]["step"] == recipe.steps
    # held-out accuracy per task along the way (every eval_every steps) and at the end
    assert [p["step"] for p in stats["heldout_curve"]] == [2, 3]
    assert stats["heldout_curve"][-1]["heldout_accuracy"] == stats["heldout_accuracy"]
    sums = verify_base(folder)
    assert len(sums["model.safetensors"]) == 64
    with pytest.raises(BaseModelError, match="another recipe"):
        pretrain_base(folder, BaseRecipe.tiny(steps=5))
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")
    with pytest.raises(BaseModelError, match=r"config\.json"):
        verify_base(folder)


@pytest.mark.slow
def test_the_demo_starts_from_a_base_reports_it_zero_shot_and_draws_a_learning_curve(tmp_path):
    from rationalrewards.demo import run_demo
    from rationalrewards.demo.base import BaseRecipe, pretrain_base

    pretrain_base(tmp_path / "base", BaseRecipe.tiny(), threads=1)
    cfg = DemoConfig.preset(quick=True, out=str(tmp_path / "run"), base=str(tmp_path / "base"), max_steps=6,
                            train_pairs=12, eval_pairs=6, refine_prompts=1, curve_points=2, curve_pairs=4, batch_size=4,
                            extra={"threads": 1})
    s = run_demo(cfg)
    assert s["base"]["sha256"] and s["base"]["pretraining"]["heldout_accuracy"]["all"]["n"] > 0
    zs = s["base"]["zero_shot"]
    assert zs["n"] == s["student"]["n"] and set(zs["by_category"]) == set(s["student"]["by_category"])
    assert set(zs["claims"]) == set(s["student"]["claims"])
    curve = s["student"]["learning_curve"]
    assert [p["step"] for p in curve["points"]] == [0, 2, 4, 6] and curve["pairs"] == 4
    assert all(p["n"] == 4 and p["ci95"][0] <= (p["accuracy"] or 0) <= p["ci95"][1] for p in curve["points"])
    assert s["student"]["train"]["trainer"] == "lean" and s["student"]["train"]["examples_per_second"] > 0
    html = (tmp_path / "run" / "report.html").read_text()
    assert "The base before PARROT" in html


def test_the_report_reads_the_run_folder_not_the_pipeline():
    import ast
    from pathlib import Path

    import rationalrewards.demo.report as report

    tree = ast.parse(Path(report.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "layout" in imported and not any(m and m.split(".")[-1] == "pipeline" for m in imported)


def test_the_shipped_base_is_intact_and_learnt_its_tasks():
    from rationalrewards.demo.base import RECIPE_FILE, SHIPPED_BASE, STATS_FILE, BaseRecipe, shipped_base

    folder = shipped_base()  # raises if any listed file is missing or altered
    assert folder == SHIPPED_BASE
    assert json.loads((folder / RECIPE_FILE).read_text()) == BaseRecipe().to_json()
    stats = json.loads((folder / STATS_FILE).read_text())
    after, before = stats["heldout_accuracy"], stats["heldout_accuracy_before"]
    assert after["all"]["exact"] > before["all"]["exact"] + 0.3
    assert after["caption"]["exact"] >= 0.7 and after["qa"]["exact"] >= 0.8
    # the skills the judge needs most, which the recipe's mix leans toward (first base: 0.37 / 0.20 / 0.20)
    assert after["match"]["exact"] >= 0.45 and after["edit"]["exact"] >= 0.5 and after["diff"]["exact"] >= 0.5
    assert after["match"]["yes_no"] >= 0.85 and after["edit"]["yes_no"] >= 0.85
    assert (folder / "model.safetensors").stat().st_size < 50_000_000
