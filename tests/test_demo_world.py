"""The demo world: scenes render deterministically and carry their spec, prompts round-trip through
the parser, the generator errs less on explicit prompts, and true defects are what they say."""

from __future__ import annotations

import io
import random
from collections import Counter

import pytest
from PIL import Image

from rationalrewards.demo.generator import DemoGenerator, ErrorRates, draw_scene, generate
from rationalrewards.demo.world import (
    CUE_TEXT,
    EditOp,
    Intent,
    Obj,
    Scene,
    Want,
    attach_scene,
    encode_png,
    find_cues,
    find_defects,
    parse_request,
    render,
    render_png,
    sample_task,
    scene_of,
    true_reward,
    true_scores,
    write_templates,
)
from rationalrewards.images import load_image
from rationalrewards.refine import GeneratorInputError, generator_from_spec

SCENE = Scene((Obj("circle", "red", "large", "left"), Obj("square", "blue", "small", "right")), "CAT")


def codes(intent: Intent, scene: Scene) -> list[str]:
    return sorted(d.code for d in find_defects(intent, scene))


# ------------------------------------------------------------------------------------------------
# Scenes and images
# ------------------------------------------------------------------------------------------------


def test_the_same_scene_always_renders_the_same_pixels_and_artefacts_change_them():
    a, b = render(SCENE), render(SCENE)
    assert a.size == (96, 96) and a.mode == "RGB"
    assert a.tobytes() == b.tobytes()
    for art in ("noise", "blur", "seam"):
        assert render(Scene(SCENE.objects, SCENE.text, (art,))).tobytes() != a.tobytes()


def test_a_png_carries_its_scene_through_bytes_paths_prepared_images_and_pil(tmp_path):
    data = render_png(SCENE)
    path = tmp_path / "x.png"
    path.write_bytes(data)
    assert scene_of(data) == SCENE
    assert scene_of(path) == SCENE and scene_of(str(path)) == SCENE
    assert scene_of(load_image(data)) == SCENE  # PreparedImage keeps the original bytes
    assert scene_of(Image.open(io.BytesIO(data))) == SCENE
    assert scene_of(attach_scene(render(SCENE), SCENE)) == SCENE


def test_images_without_a_scene_are_reported_as_none():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    assert scene_of(buf.getvalue()) is None
    assert scene_of(b"not an image") is None
    never_attached = Scene((Obj("triangle", "yellow", "small", "middle"),), "ZIP", ("blur",))
    assert scene_of(render(never_attached)) is None  # pixels alone, never recorded in this process


def test_scenes_survive_a_plain_save_within_the_process_that_made_them(tmp_path):
    # The refine loop saves generator output with a plain save(), which drops PNG text chunks.
    image = DemoGenerator().generate("A green square", seed=4)[0]
    image.save(tmp_path / "plain.png")
    assert scene_of(tmp_path / "plain.png") == scene_of(image)


def test_scene_json_round_trips():
    full = Scene(SCENE.objects, "SUN", ("noise", "seam"))
    assert Scene.from_json(full.to_json()) == full


# ------------------------------------------------------------------------------------------------
# Prompts
# ------------------------------------------------------------------------------------------------


def test_every_sampled_prompt_parses_back_to_its_intent():
    rng = random.Random(7)
    kinds = Counter()
    for i in range(400):
        task = sample_task(rng, f"t{i}", edit_rate=0.3, cue_rate=0.3)
        kinds[task.task] += 1
        again = parse_request(task.prompt, task.intent.source)
        assert again == task.intent, task.prompt
        if task.task == "edit":
            assert again.edit is not None, task.prompt
    assert kinds["t2i"] > 200 and kinds["edit"] > 80


def test_prompts_read_naturally_and_cues_have_fixed_wordings():
    intent = Intent((Want("circle", "red", "small", "left"), Want("square", "blue")), "CAT",
                    frozenset({"count", "spell", "clean"}))
    from rationalrewards.demo.world import write_prompt

    text = write_prompt(intent, random.Random(0))
    assert text.startswith("Exactly two objects: a small red circle on the left and a blue square")
    assert '"CAT"' in text and CUE_TEXT["clean"] in text
    assert find_cues(text) == frozenset({"count", "spell", "clean"})


def test_refinement_sentences_appended_to_a_request_add_cues_but_no_objects():
    base = "A red circle and a blue square with the word CAT written below"
    refined = base + ". " + " ".join(CUE_TEXT[c] for c in ("count", "attr", "spell", "clean"))
    a, b = parse_request(base), parse_request(refined)
    assert a.objects == b.objects and a.text == b.text == "CAT"
    assert b.cues == frozenset({"count", "attr", "spell", "clean"})


def test_edit_instructions_resolve_their_target_in_the_source_scene():
    src = Scene((Obj("circle", "red", "large", "left"), Obj("triangle", "green", "small", "middle")), "SUN")
    assert parse_request("Change the red circle to blue", src).edit == EditOp("recolor", target=src.objects[0],
                                                                               color="blue")
    assert parse_request("Remove the green triangle", src).edit == EditOp("remove", target=src.objects[1])
    add = parse_request("Add a small yellow square on the right", src).edit
    assert add == EditOp("add", obj=Obj("square", "yellow", "small", "right"))
    assert parse_request('Change the text to "MAP"', src).edit == EditOp("retext", text="MAP")
    assert parse_request("Remove the blue square", src).edit is None  # not in the scene


def test_the_judge_templates_are_a_valid_template_set(tmp_path):
    from rationalrewards.critique.prompts import TemplateSet, build_messages

    ts = TemplateSet.from_dir(write_templates(tmp_path / "tpl"))
    msgs = build_messages("edit", "pairwise", "Remove the red circle", ["a", "b"], ["s"], ts)
    text = "".join(p["text"] for p in msgs[0]["content"] if p["type"] == "text")
    assert "User Instruction: Remove the red circle" in text and "1. Source Image" in text


# ------------------------------------------------------------------------------------------------
# Defects and true scores
# ------------------------------------------------------------------------------------------------


def test_a_faithful_clean_image_has_no_defects_and_full_reward():
    intent = parse_request('A large red circle on the left and a small blue square on the right with the word "CAT"')
    assert codes(intent, SCENE) == []
    assert true_reward(intent, SCENE) == 1.0
    assert true_scores(intent, SCENE) == {"text_faithfulness": 4.0, "physical_quality": 4.0, "text_rendering": 4.0}


@pytest.mark.parametrize(
    ("scene", "expected"),
    [
        (Scene((Obj("circle", "red", "large", "left"),), "CAT"), ["missing"]),
        (Scene((Obj("circle", "green", "large", "left"), SCENE.objects[1]), "CAT"), ["color"]),
        (Scene((*SCENE.objects, Obj("triangle", "yellow", "small", "middle")), "CAT"), ["extra"]),
        (Scene((Obj("circle", "red", "small", "left"), SCENE.objects[1]), "CAT"), ["size"]),
        (Scene((Obj("circle", "red", "large", "middle"), SCENE.objects[1]), "CAT"), ["place"]),
        (Scene(SCENE.objects, "CAP"), ["misspelled"]),
        (Scene(SCENE.objects, None), ["no_text"]),
        (Scene(SCENE.objects, "CAT", ("noise", "blur")), ["blur", "noise"]),
    ],
)
def test_each_kind_of_t2i_mistake_is_one_named_defect(scene, expected):
    intent = parse_request("A large red circle on the left and a small blue square on the right with the word CAT")
    assert codes(intent, scene) == expected
    assert true_reward(intent, scene) < 1.0


def test_text_rendering_is_not_applicable_without_a_requested_word():
    intent = parse_request("A red circle")
    assert true_scores(intent, Scene((Obj("circle", "red"),)))["text_rendering"] is None


def test_edit_defects_separate_the_instruction_from_unrequested_changes():
    src = Scene((Obj("circle", "red", "large", "left"), Obj("triangle", "green", "small", "middle")))
    intent = parse_request("Change the red circle to blue", src)
    done = Scene((Obj("circle", "blue", "large", "left"), src.objects[1]))
    assert codes(intent, done) == []
    assert codes(intent, src) == ["not_applied"]
    assert codes(intent, Scene((Obj("circle", "yellow", "large", "left"), src.objects[1]))) == ["wrong_change"]
    assert codes(intent, Scene((done.objects[0],))) == ["changed_other"]
    assert true_scores(intent, Scene((done.objects[0],)))["image_faithfulness"] == 2.5
    assert true_scores(intent, done)["text_rendering"] is None


# ------------------------------------------------------------------------------------------------
# The generator
# ------------------------------------------------------------------------------------------------


def test_image_i_depends_only_on_request_and_seed_plus_i():
    gen = DemoGenerator()
    four = gen.generate("A red circle and a blue square", seed=10, n=4)
    third = gen.generate("A red circle and a blue square", seed=12, n=1)[0]
    assert four[2].tobytes() == third.tobytes()
    assert scene_of(four[2]) == scene_of(third)  # the scene rides along in image.info


def test_explicit_prompts_make_the_generator_err_far_less():
    casual = "A red circle on the left, a blue square in the middle and a green triangle on the right with the word CAT"
    explicit = casual.replace("with the word CAT", 'with the word "CAT"') + ". " + " ".join(
        CUE_TEXT[c] for c in ("count", "attr", "place", "clean"))

    def defect_rate(request: str) -> float:
        bad = 0
        for seed in range(300):
            intent, scene = draw_scene(request, seed=seed)
            bad += bool(find_defects(intent, scene))
        return bad / 300

    casual_rate, explicit_rate = defect_rate(casual), defect_rate(explicit)
    assert casual_rate > 0.7
    assert explicit_rate < casual_rate / 2


def test_error_rates_are_a_table_each_cue_lowers_its_own_row():
    rates = ErrorRates()
    assert rates.rate("missing", cued=False) > rates.rate("missing", cued=True)
    assert rates.to_json()["artefact"] == list(rates.artefact)
    never = ErrorRates(**{k: (0.0, 0.0) for k in rates.to_json()})
    intent, scene = draw_scene("A red circle and a blue square", seed=3, rates=never)
    assert find_defects(intent, scene) == []


def test_edits_need_a_source_made_by_the_world():
    gen = DemoGenerator()
    src = Scene((Obj("circle", "red", "large", "left"),))
    src_img = Image.open(io.BytesIO(encode_png(render(src), src)))
    out = gen.generate("Change the red circle to blue", source=src_img, seed=0, n=2)
    assert len(out) == 2 and all(scene_of(o) is not None for o in out)
    foreign = render(Scene((Obj("square", "green", "small", "right"),)), size=64)  # pixels the world never made
    with pytest.raises(GeneratorInputError, match="rr-scene"):
        gen.generate("Change the red circle to blue", source=foreign, seed=0)


def test_refine_finds_the_generator_by_spec():
    gen = generator_from_spec("python:rationalrewards.demo.generator:DemoGenerator")
    assert isinstance(gen, DemoGenerator) and gen.describe()["generator"] == "demo"
    fn = generator_from_spec("python:rationalrewards.demo.generator:generate")
    assert fn.generate("A red circle", seed=1, n=2)[1].tobytes() == generate("A red circle", seed=2)[0].tobytes()
