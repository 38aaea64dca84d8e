"""Localisation through real transformers code paths with tiny random Grounding DINO and SAM.

The checkpoints are built from configs into a temporary folder (with a locally built WordPiece
tokenizer) and loaded exactly as the public ones are. Their weights are random, so the boxes are
arbitrary: these tests check that the whole path runs and that everything it returns and writes
is well-formed, never where things are found.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from rationalrewards import RewardModel
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.testing.scripted_server import RecordedRequest, Reply, ScriptedServer, critique_text

pytest.importorskip("torch")
pytest.importorskip("transformers")

W, H = 120, 80
CRITIQUE = {
    "id": "scene", "task": "t2i", "ok": True, "error": None, "error_kind": None,
    "scores": {"text_faithfulness": 2.0, "image_faithfulness": None, "physical_quality": 1.5, "text_rendering": None},
    "justifications": {
        "text_faithfulness": "The dog is missing its tail.",
        "physical_quality": "The left hand has six fingers, and the sign's text is garbled.",
        "text_rendering": "No text was requested.",
    },
    "reward": 0.25, "summary": "Broken anatomy.", "raw": "",
}
DIMENSIONS = {"text_faithfulness", "physical_quality", "text_rendering"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from rationalrewards.testing.tiny_detectors import build_tiny_grounding_dino, build_tiny_sam

    root = tmp_path_factory.mktemp("tiny-detectors")
    return str(build_tiny_grounding_dino(root / "grounding-dino")), str(build_tiny_sam(root / "sam"))


def scene(path, size=(W, H)):
    img = Image.new("RGB", size, (90, 140, 200))
    img.paste((230, 200, 40), (size[0] // 6, size[1] // 4, size[0] // 2, size[1] * 3 // 4))
    img.save(path)
    return path


@pytest.fixture
def image(tmp_path):
    return scene(tmp_path / "scene.png")


def defect_judge(req: RecordedRequest):
    if "List the concrete, visible defects" in req.text("user"):
        return ('{"object": "left hand", "problem": "six fingers", "dimension": "physical_quality"}\n'
                '{"object": "dog", "problem": "no tail", "dimension": "text_faithfulness"}')
    return critique_text("t2i", {"text_faithfulness": 2.0, "physical_quality": 1.5, "text_rendering": None})


def assert_well_formed(regions, phrases, size=(W, H)):
    for r in regions:
        x0, y0, x1, y1 = r.box
        assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]
        assert 0.0 <= r.score <= 1.0
        assert r.phrase in phrases
        assert r.dimension in DIMENSIONS
        assert r.mask.size == size and r.mask.mode == "L"
        assert sum(r.mask.histogram()[1:255]) == 0  # binary: only 0 and 255


def test_the_judges_defects_are_detected_and_segmented(models, image):
    from rationalrewards.localize import localize_details

    detector, segmenter = models
    with ScriptedServer(defect_judge) as server:
        rm = RewardModel(OpenAIBackend(server.base_url, "judge", max_retries=0))
        loc = localize_details(image, CRITIQUE, judge=rm, detector=detector, segmenter=segmenter,
                               box_threshold=0.0, text_threshold=0.0, device="cpu")
        assert server.chat_request_count == 1
    assert loc.defect_source == "judge" and loc.judge_error is None
    assert [(d.phrase, d.dimension) for d in loc.defects] == [("left hand", "physical_quality"),
                                                               ("dog", "text_faithfulness")]
    assert loc.regions, "a box threshold of 0 keeps every query"
    assert len(loc.regions) <= 2 * 3  # at most three boxes per phrase after NMS
    assert_well_formed(loc.regions, {"left hand", "dog"})
    assert [r.score for r in loc.regions] == sorted((r.score for r in loc.regions), reverse=True)


def test_thresholds_above_one_find_nothing_and_outputs_are_still_written(models, image, tmp_path):
    from rationalrewards.localize import localize_details, write_localization

    detector, segmenter = models
    loc = localize_details(image, CRITIQUE, detector=detector, segmenter=segmenter, box_threshold=1.01,
                           device="cpu")
    assert loc.regions == []
    payload = write_localization(loc, image, tmp_path / "out")
    assert payload["regions"] == []
    with Image.open(tmp_path / "out" / "overlay.png") as overlay:
        assert overlay.size == (W, H)


@pytest.mark.parametrize("size", [(W, H), (64, 64), (300, 40)])
def test_without_a_judge_the_fallback_phrases_are_used(models, tmp_path, size):
    from rationalrewards.localize import localize

    detector, segmenter = models
    image = scene(tmp_path / "scene.png", size)
    regions = localize(image, CRITIQUE, detector=detector, segmenter=segmenter, box_threshold=0.0,
                       text_threshold=0.0, device="cpu")
    fallback = {"left hand", "six fingers", "sign text", "dog", "tail"}
    assert regions
    assert_well_formed(regions, fallback, size)


def test_a_failing_judge_falls_back_and_says_why(models, image):
    from rationalrewards.localize import localize_details

    detector, _ = models
    with ScriptedServer(lambda req: Reply(status=503)) as server:
        rm = RewardModel(OpenAIBackend(server.base_url, "judge", max_retries=0))
        loc = localize_details(image, CRITIQUE, judge=rm, detector=detector, segmenter=None, box_threshold=0.0,
                               text_threshold=0.0, device="cpu")
    assert loc.defect_source == "fallback"
    assert loc.judge_error.startswith("judge call failed")
    assert loc.regions and all(r.mask is None for r in loc.regions)  # no segmenter: boxes only


def test_a_judge_that_sees_no_defect_yields_no_regions(models, image):
    from rationalrewards.localize import localize_details

    detector, _ = models
    with ScriptedServer(lambda req: "NONE") as server:
        rm = RewardModel(OpenAIBackend(server.base_url, "judge", max_retries=0))
        loc = localize_details(image, CRITIQUE, judge=rm, detector=detector, segmenter=None, box_threshold=0.0,
                               device="cpu")
    assert (loc.defect_source, loc.judge_error, loc.defects, loc.regions) == ("judge", None, [], [])


def test_many_phrases_are_split_across_prompts_that_fit_the_text_encoder(models, image):
    from rationalrewards.localize.detect import GroundingDinoDetector

    detector = GroundingDinoDetector(models[0], device="cpu")
    phrases = [f"red square {i}" for i in range(12)]  # far beyond the tiny model's 32 text tokens
    assert len(detector.load()._chunks(phrases)) > 1
    found = detector.detect(Image.open(image).convert("RGB"), phrases, box_threshold=0.0, text_threshold=0.0)
    assert found and {d.phrase_index for d in found} <= set(range(12))


def test_written_outputs_follow_the_schema(models, image, tmp_path):
    from rationalrewards.localize import localize_details, write_localization

    detector, segmenter = models
    out = tmp_path / "out"
    loc = localize_details(image, CRITIQUE, detector=detector, segmenter=segmenter, box_threshold=0.0,
                           text_threshold=0.0, defects=["left hand", "dog"], device="cpu")
    payload = write_localization(loc, image, out, critique=CRITIQUE, attach=True)
    written = json.loads((out / "regions.json").read_text())
    assert written == payload
    assert written["image_size"] == [W, H] and written["defect_source"] == "given"
    assert written["regions"]
    for region in written["regions"]:
        assert set(region) >= {"phrase", "dimension", "box", "score", "mask"}
        assert len(region["box"]) == 4 and region["phrase"] in ("left hand", "dog")
        with Image.open(out / region["mask"]) as mask:
            assert mask.format == "PNG" and mask.size == (W, H)
    with Image.open(out / "overlay.png") as overlay:
        assert overlay.format == "PNG" and overlay.size == (W, H) and overlay.mode == "RGB"
        # Boxes and labels were drawn: the overlay differs from the input.
        assert overlay.tobytes() != Image.open(image).convert("RGB").tobytes()
    attached = json.loads((out / "critique.json").read_text())
    assert attached["scores"] == CRITIQUE["scores"]
    assert attached["regions"] == written["regions"]


def test_a_detector_that_cannot_be_loaded_is_a_clear_error(tmp_path, image):
    from rationalrewards.localize import ModelLoadError, localize

    with pytest.raises(ModelLoadError, match="could not load detector"):
        localize(image, CRITIQUE, detector=str(tmp_path / "no-such-model"), segmenter=None, device="cpu")


def test_cli_writes_regions_and_overlay_and_reports_bad_inputs(models, image, tmp_path):
    from rationalrewards.cli.main import app

    detector, segmenter = models
    critique_file = tmp_path / "critique.json"
    critique_file.write_text(json.dumps({"id": "row", "prompt": "a dog", "critique": CRITIQUE}))
    out = tmp_path / "out"
    runner = CliRunner()
    base = ["localize", "--image", str(image), "--critique", str(critique_file), "--out", str(out),
            "--detector", detector, "--segmenter", segmenter, "--detector-device", "cpu"]
    res = runner.invoke(app, [*base, "--box-threshold", "0", "--text-threshold", "0", "--attach", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout.strip().splitlines()[-1])
    assert payload["regions"] and payload["defect_source"] == "fallback"
    assert (out / "overlay.png").is_file() and (out / "critique.json").is_file()

    res = runner.invoke(app, [*base[:4], str(tmp_path / "missing.json"), *base[5:]])
    assert res.exit_code == 2 and "critique file not found" in res.output
    res = runner.invoke(app, [*base[:2], str(tmp_path / "missing.png"), *base[3:]])
    assert res.exit_code == 2 and "image file not found" in res.output
    res = runner.invoke(app, [*base[:8], str(tmp_path / "nowhere"), *base[9:]])
    assert res.exit_code == 4 and "could not load detector" in res.output


def test_cli_takes_a_row_of_curates_output_and_its_image(models, tmp_path):
    from rationalrewards.cli.main import app

    detector, _ = models
    curated = tmp_path / "curated"
    (curated / "images").mkdir(parents=True)
    scene(curated / "images" / "b.png")
    rows = [{"id": "a", "prompt": "a cat", "image": "images/missing.png", "critique": CRITIQUE},
            {"id": "b", "prompt": "a dog", "image": "images/b.png", "critique": CRITIQUE}]
    rejected = curated / "rejected.jsonl"
    rejected.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runner = CliRunner()
    base = ["localize", "--critique", str(rejected), "--out", str(tmp_path / "out"), "--detector", detector,
            "--segmenter", "none", "--detector-device", "cpu", "--box-threshold", "0", "--json"]
    res = runner.invoke(app, [*base, "--id", "b"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout.strip().splitlines()[-1])
    assert payload["image"] == str(curated / "images" / "b.png")
    assert payload["regions"] and all(r["mask"] is None for r in payload["regions"])
    res = runner.invoke(app, base)
    assert res.exit_code == 2 and "holds 2 JSON objects; choose one with --id" in res.output
    res = runner.invoke(app, [*base, "--id", "zzz"])
    assert res.exit_code == 2 and "no row with id 'zzz'" in res.output
