"""The demo pipeline's parts that need no training: the world's pair files, PARROT with the scripted
teacher over them, the rationale error measurement, the unfiltered ablation rows, the refinement
metrics, the report, and the run folder's settings guard."""

from __future__ import annotations

import json

import pytest

from rationalrewards.demo.pipeline import (
    DemoConfig,
    DemoError,
    DemoRun,
    make_pairs,
    make_refine_items,
    rationale_errors,
    summarize_refinement,
    tokenizer_corpus,
    trajectory_metrics,
    unfiltered_rows,
)
from rationalrewards.demo.world import scene_of, write_templates


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_pairs_are_written_in_the_pairs_benchmark_layout_with_a_true_label(tmp_path):
    info = make_pairs(tmp_path, 40, seed=1, split="train", edit_rate=0.3)
    rows, truth = read_jsonl(tmp_path / "pairs.jsonl"), read_jsonl(tmp_path / "truth.jsonl")
    assert info["pairs"] == len(rows) == len(truth) >= 36
    for row, t in zip(rows, truth, strict=True):
        assert row["label"] == ("A" if t["reward_a"] > t["reward_b"] else "B")
        assert scene_of(tmp_path / row["image_a"]) is not None
        assert ("source" in row) == (t["source"] is not None)
    assert {r["category"].split("/")[0] for r in rows} == {"t2i", "edit"}
    # Deterministic: a rerun rewrites the same files.
    before = (tmp_path / "pairs.jsonl").read_bytes()
    make_pairs(tmp_path, 40, seed=1, split="train", edit_rate=0.3)
    assert (tmp_path / "pairs.jsonl").read_bytes() == before


def test_refinement_requests_are_casual_so_the_generator_has_mistakes_to_fix(tmp_path):
    items = make_refine_items(tmp_path, 6, seed=0, edit_rate=0.5)
    assert len(items) == 6 and all("exactly" not in it["prompt"].lower() for it in items)
    assert all((tmp_path / it["source"]).is_file() for it in items if it.get("source"))


def test_the_tokenizer_corpus_holds_the_critique_vocabulary():
    text = "".join(tokenizer_corpus(0, n=20))
    for phrase in ("## Justification:", "Physical and Visual Quality", "## Refined Request:", "User Instruction:"):
        assert phrase in text


@pytest.fixture(scope="module")
def parrot_run(tmp_path_factory):
    """A small real PARROT run (ingest, anchor, filter, build-sft) with the scripted teacher."""
    from rationalrewards.demo.teacher import DemoTeacher
    from rationalrewards.parrot.config import ParrotConfig
    from rationalrewards.parrot.pipeline import Parrot

    root = tmp_path_factory.mktemp("demo-parrot")
    make_pairs(root / "world", 120, seed=3, split="train")
    tpl = write_templates(root / "templates")
    cfg = ParrotConfig.from_mapping({"pairs": str(root / "world" / "pairs.jsonl"), "out": str(root / "parrot"),
                                     "teacher": {"templates": tpl, "concurrency": 8},
                                     "anchor": {"samples": 2}, "sft": {"val_fraction": 0.0}})
    parrot = Parrot(cfg, backend=DemoTeacher(noise=0.3, seed=3))
    stats = parrot.run()
    return root, parrot, stats


def test_parrot_keeps_fewer_wrong_rationales_than_the_teacher_wrote(parrot_run):
    root, _parrot, stats = parrot_run
    assert stats["filter"]["pairwise"]["kept"] > 60
    reasons = stats["filter"]["pairwise"]["rejected_by_reason"]
    assert reasons.get("repredict_wrong", 0) > 0  # rationalised rationales are caught by re-prediction
    errors = rationale_errors(root / "parrot", root / "world" / "truth.jsonl")
    assert errors["raw"]["n"] > errors["kept"]["n"] > 0
    assert 0.2 < errors["raw"]["pairwise"] < 0.4  # about the configured noise (pointwise units hold two critiques)
    assert errors["kept"]["error_rate"] < errors["raw"]["error_rate"]


def test_student_data_carry_the_critique_and_never_the_label(parrot_run):
    root, _parrot, _stats = parrot_run
    rows = read_jsonl(root / "parrot" / "sft" / "trl" / "train.jsonl")
    kinds = {r["kind"] for r in rows}
    assert kinds == {"pairwise", "pointwise"}
    for r in rows[:50]:
        prompt = json.dumps(r["messages"][:-1])
        assert "People who compared" not in prompt and "preferred" not in prompt
        assert r["messages"][-1]["content"][0]["text"].startswith("# Detailed Judgement")


def test_the_unfiltered_ablation_keeps_every_parseable_first_sample(parrot_run):
    _root, parrot, _stats = parrot_run
    rows = unfiltered_rows(parrot)
    pairs = parrot.usable(parrot.pairs())
    assert len([r for r in rows if r["kind"] == "pairwise"]) == len(pairs)
    assert all(r["kept"] and r["sample"] == 0 for r in rows)
    assert all("rationale_a" in r and "rationale_b" in r for r in rows if r["kind"] == "pointwise")


def test_refinement_metrics_score_every_image_against_the_original_request(tmp_path):
    from rationalrewards.critique.model import RewardModel
    from rationalrewards.critique.prompts import TemplateSet
    from rationalrewards.demo.generator import DemoGenerator
    from rationalrewards.demo.teacher import DemoTeacher
    from rationalrewards.demo.world import JUDGE_TEMPLATES
    from rationalrewards.refine import RefineConfig, refine

    critic = RewardModel(DemoTeacher(noise=0.0), templates=TemplateSet(name="demo", **JUDGE_TEMPLATES))
    prompt = "A red circle, a blue square and a green triangle with the word CAT written below"
    traj = refine(prompt, generator=DemoGenerator(), critic=critic, out_dir=tmp_path / "r",
                  config=RefineConfig(rounds=2, candidates=2, threshold=None, patience=None, baseline=True, seed=11))
    m = trajectory_metrics(traj, None)
    assert m["rounds"] == 3 and m["generations"] == 6 and m["best_of_n"]["generations"] == 6
    assert m["final"]["true"] >= m["round0"]["true"]  # an exact critic never accepts a worse image
    assert all(r == prompt or r.startswith(prompt.rstrip(".")) for r in m["requests"])  # anchored refinements
    s = summarize_refinement([m])
    assert s["n"] == 1 and s["true_reward"]["final_best"] == pytest.approx(m["final"]["true"], abs=1e-4)


def test_a_folder_holding_another_run_is_refused(tmp_path):
    DemoRun(DemoConfig.preset(quick=True, out=str(tmp_path)))._save_state()
    with pytest.raises(DemoError, match="other settings"):
        DemoRun(DemoConfig.preset(quick=True, out=str(tmp_path), seed=5))
    DemoRun(DemoConfig.preset(quick=True, out=str(tmp_path), seed=5), overwrite=True)  # explicit restart


def test_bad_settings_name_the_setting():
    with pytest.raises(ValueError, match="teacher_noise"):
        DemoConfig.preset(teacher_noise=1.5)
    with pytest.raises(ValueError, match="max_steps"):
        DemoConfig.preset(max_steps=0)
    with pytest.raises(ValueError, match="sft_kinds"):
        DemoConfig.preset(sft_kinds="all")


def test_the_student_can_learn_from_pointwise_critiques_only(tmp_path):
    # sft_kinds="pointwise" (the default) keeps PARROT's filter whole and hands SFT only the
    # one-image critiques, the judgements the pointwise judge writes.
    cfg = DemoConfig.preset(quick=True, out=str(tmp_path), train_pairs=24, eval_pairs=4, refine_prompts=0)
    assert cfg.sft_kinds == "pointwise"
    run = DemoRun(cfg)
    run.run(stages=("world", "parrot"))
    rows = read_jsonl(tmp_path / "parrot" / "sft" / "trl" / "train.jsonl")
    assert rows and {r["kind"] for r in rows} == {"pointwise"}
    assert run.result("parrot")["pairwise"]["kept"] > 0  # the pairwise rationales were still anchored and filtered
