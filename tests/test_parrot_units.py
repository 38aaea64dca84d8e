"""PARROT building blocks: leak detection, rationale rewriting, consistency rules, the crash-safe
row log, the configuration layers, and tie pairs."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from rationalrewards.parrot.checks import LeakDetector, pairwise_consistency, pointwise_consistency
from rationalrewards.parrot.config import ConfigError, ParrotConfig, resolve_config
from rationalrewards.parrot.prompts import as_notes, clean_rationale, strip_scores, swap_letters
from rationalrewards.parrot.store import RowLog
from rationalrewards.testing.scripted_server import pairwise_text

T2I = ("text_faithfulness", "physical_quality", "text_rendering")


@pytest.mark.parametrize("text", [
    "The human preferred Image A because of its lighting.",
    "Humans clearly preferred the second image.",
    "As labelled, Image B wins.",
    "This matches the ground truth.",
    "The ground-truth answer is A.",
    "Annotators picked Image A.",
    "Image A was preferred by the raters.",
    "Given the provided label, A is better.",
    "I was told that Image B is better.",
    "People who compared them judged Image A better.",
    "The stated preference is for Image B.",
])
def test_leaks_of_the_anchor_are_found(text):
    assert LeakDetector().find(text)


@pytest.mark.parametrize("text", [
    "The label on the jar reads 'HONEY' correctly.",
    "Image A renders the price label and the street sign legibly.",
    "Image A is stronger: the human figure has correct anatomy.",
    "Two humans stand by the fountain, as requested.",
    "Image B is the better result for this request.",
    "In the comparison of lighting, Image A is more natural.",
])
def test_ordinary_critique_prose_is_not_a_leak(text):
    assert LeakDetector().find(text) == []


def test_pointwise_critiques_may_not_mention_the_unseen_candidate():
    assert LeakDetector(pointwise=True).find("It is sharper than the other candidate.")
    assert LeakDetector(pointwise=True).find("This image won the comparison.")
    assert not LeakDetector().find("It is sharper than the other candidate.")
    assert LeakDetector(["sharper"]).find("It is sharper.")  # extra patterns
    with pytest.raises(ValueError, match="bad leak pattern"):
        LeakDetector(["("])


def test_re_prediction_notes_keep_the_prose_and_drop_scores_and_verdicts():
    raw = "<think>draft</think>\n" + pairwise_text(
        "t2i", {"text_faithfulness": 3.5, "physical_quality": 3.0, "text_rendering": None},
        {"text_faithfulness": 2.0, "physical_quality": 2.5, "text_rendering": None},
    ) + "\nFinal verdict: Image A\n<notes>x</notes><|im_end|>"
    notes = as_notes(raw, keep_scores=False)
    assert "draft" not in notes and "<|im_end|>" not in notes and "<notes>" not in notes
    for gone in ("## Score A", "## Score B", "## Winner", "Final verdict"):
        assert gone not in notes
    assert "Image A is stronger" in notes and "# Summary:" in notes
    kept = as_notes(raw, keep_scores=True)
    assert "## Score A: 3.5" in kept
    assert strip_scores("**Score B**: 3\nScore A reflects texture") == "Score A reflects texture"
    assert clean_rationale("x <image> y  \n") == "x [image] y"


def test_swapping_letters_relabels_both_images():
    assert swap_letters("Image A beats image B; Score A: 3, Score B: 2") == \
        "Image B beats image A; Score B: 3, Score A: 2"


def test_pairwise_consistency_uses_score_sums_with_a_margin():
    a = {"text_faithfulness": 3.5, "physical_quality": 3.0, "text_rendering": None}
    b = {"text_faithfulness": 3.0, "physical_quality": 3.0, "text_rendering": 2.0}  # N/A on A: skipped
    assert pairwise_consistency(a, b, "t2i", "A") == (None, 0.5, "A")
    assert pairwise_consistency(a, b, "t2i", "B")[0] == "inconsistent"
    assert pairwise_consistency(a, b, "t2i", "A", margin=0.5)[0] == "low_margin"
    assert pairwise_consistency(a, b, "t2i", "A", margin=0.4)[0] is None
    assert pairwise_consistency(a, a, "t2i", "tie")[0] is None
    assert pairwise_consistency(a, b, "t2i", "tie")[0] == "inconsistent"
    assert pointwise_consistency(0.8, 0.3, "A") == (None, 0.5, "A")
    assert pointwise_consistency(0.8, 0.3, "B")[0] == "inconsistent"
    assert pointwise_consistency(0.8, 0.75, "A", margin=0.1)[0] == "low_margin"


def test_row_log_survives_a_torn_line_and_keeps_done_rows_over_failures(tmp_path):
    path = tmp_path / "log.jsonl"
    log = RowLog(path, is_done=lambda r: r["generated"], tag="digest")
    log.append({"key": "a", "generated": False, "digest": "1"})
    log.append({"key": "b", "generated": True, "digest": "2"})
    log.append({"key": "a", "generated": True, "digest": "3"})
    log.append({"key": "b", "generated": False, "digest": "4"})  # a later failure does not undo b
    log.close()
    with path.open("a") as fh:
        fh.write('{"key": "c", "generated": tr')  # killed mid-write
    log = RowLog(path, is_done=lambda r: r["generated"], tag="digest")
    assert log.torn == 1 and "c" not in log
    assert log.is_key_done("a") and log.tag_of("a") == "3" and log.tag_of("b") == "2"
    log.append({"key": "c", "generated": True, "digest": "5"})
    assert log.finalize(["c", "a"]) == 3
    log.close()
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["c", "a", "b"]
    assert all(json.loads(line)["generated"] for line in path.read_text().splitlines())


def test_configuration_layers_and_errors(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"anchor": {"samples": 5, "temperature": 0.3},
                                                 "teacher": {"model": "saved"}}))
    yaml = tmp_path / "c.yaml"
    yaml.write_text(f"out: {out}\nanchor:\n  samples: 3\nfilter:\n  select: first\n")
    cfg = resolve_config(yaml_path=yaml, overrides={"anchor": {"samples": 4, "temperature": None}})
    assert cfg.anchor.samples == 4  # flag > YAML > saved
    assert cfg.anchor.temperature == 0.3  # saved > default
    assert cfg.filter.select == "first" and cfg.teacher.model == "saved" and cfg.out == str(out)
    cfg.teacher.api_key = "secret"
    assert "api_key" not in json.dumps(cfg.to_dict())
    with pytest.raises(ConfigError, match=r"anchor\.sample"):
        ParrotConfig.from_mapping({"anchor": {"sample": 2}})
    with pytest.raises(ConfigError, match="must be one of"):
        ParrotConfig.from_mapping({"filter": {"select": "best"}})
    with pytest.raises(ConfigError, match="must be a number"):
        ParrotConfig.from_mapping({"anchor": {"samples": "two"}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("anchor: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_config(yaml_path=bad)


def test_ties_can_be_trained_on_when_asked(tmp_path):
    from rationalrewards.parrot.pipeline import Parrot
    from rationalrewards.testing.judges import scripted_teacher
    from rationalrewards.testing.scripted_server import ScriptedServer

    for c in ("red", "blue"):
        Image.new("RGB", (16, 16), c).save(tmp_path / f"{c}.png")
    rows = [{"id": "t", "prompt": "two kites", "image_a": "red.png", "image_b": "blue.png", "label": "tie"}]
    (tmp_path / "p.jsonl").write_text(json.dumps(rows[0]) + "\n")
    with ScriptedServer(scripted_teacher()) as server:
        cfg = resolve_config(overrides={
            "pairs": str(tmp_path / "p.jsonl"), "out": str(tmp_path / "out"),
            "teacher": {"base_url": [server.base_url], "model": "t", "max_retries": 0},
            "input": {"include_ties": True}, "anchor": {"samples": 1},
            "sft": {"val_fraction": 0.0, "save_hf_dataset": True},
        })
        stats = Parrot(cfg).run()
    assert stats["pairs"]["used"] == 1
    assert stats["filter"]["pairwise"]["kept"] == 1 and stats["filter"]["pointwise"]["kept"] == 1
    assert stats["score_distributions"]["pairwise_tie"]["text_faithfulness"]["n"] == 2
    # --save-hf-dataset: a self-contained copy for datasets.load_from_disk.
    import datasets

    hf = datasets.load_from_disk(str(tmp_path / "out" / "sft" / "hf"))
    assert len(hf["train"]) == 3 and hf["train"][0]["images"][0].size == (16, 16)


def test_the_example_config_is_valid(examples_dir):
    cfg = ParrotConfig.from_yaml(examples_dir / "parrot.yaml")
    assert cfg.train.learning_rate == 1e-5 and cfg.train.grad_accum == 4 and cfg.train.freeze_vision
    assert len(cfg.teacher.base_url) == 2 and cfg.anchor.orders == "balanced"


def test_an_input_row_edited_in_place_is_read_and_anchored_again(tmp_path):
    from rationalrewards.parrot.pipeline import Parrot
    from rationalrewards.testing.judges import scripted_teacher
    from rationalrewards.testing.scripted_server import ScriptedServer

    for c in ("red", "blue"):
        Image.new("RGB", (16, 16), c).save(tmp_path / f"{c}.png")
    row = {"id": "x", "prompt": "a red kite", "image_a": "red.png", "image_b": "blue.png", "label": "A"}
    (tmp_path / "p.jsonl").write_text(json.dumps(row) + "\n")
    with ScriptedServer(scripted_teacher()) as server:
        cfg = resolve_config(overrides={
            "pairs": str(tmp_path / "p.jsonl"), "out": str(tmp_path / "out"),
            "teacher": {"base_url": [server.base_url], "model": "t", "max_retries": 0},
            "anchor": {"samples": 1, "pointwise": False, "orders": "as-is"},
        })
        Parrot(cfg).run()
        assert server.chat_request_count == 2
        (tmp_path / "p.jsonl").write_text(json.dumps({**row, "label": "B"}) + "\n")
        stats = Parrot(cfg).run()
        assert server.chat_request_count == 4  # the relabelled pair is anchored and re-predicted again
    assert stats["pairs"]["labels"] == {"B": 1}
    anchored = [json.loads(line) for line in (tmp_path / "out" / "anchored.jsonl").read_text().splitlines()]
    assert [r["shown_label"] for r in anchored] == ["B"]


def test_a_teacher_that_parrots_the_preference_sentence_is_caught():
    from rationalrewards.parrot.prompts import TeacherTemplates

    phrases = TeacherTemplates.load().phrases
    for key in ("pairwise_preferred", "pairwise_tie"):
        assert LeakDetector().find(phrases[key].format(preferred="Image B", other="Image A")), key
    for key in ("pointwise_won", "pointwise_lost", "pointwise_tie"):
        assert LeakDetector(pointwise=True).find(phrases[key]), key
