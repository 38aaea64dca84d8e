"""The scripted teacher: it sees images through their scene chunk, answers in the released formats,
rationalises under an anchor, re-predicts from notes, makes noise at the configured rate, and works
in process, by registered name and over HTTP."""

from __future__ import annotations

import asyncio

import pytest

from rationalrewards.backends import SamplingParams, create_backend
from rationalrewards.critique.model import RewardModel
from rationalrewards.critique.parser import parse_comparison, parse_critique, parse_final_verdict
from rationalrewards.critique.prompts import TemplateSet, build_messages
from rationalrewards.demo.teacher import (
    DemoTeacher,
    claimed_defects,
    pairwise_answer,
    pointwise_answer,
    read_defects,
    teacher_responder,
)
from rationalrewards.demo.world import JUDGE_TEMPLATES, Obj, Scene, find_defects, parse_request, render_png
from rationalrewards.images import load_image
from rationalrewards.testing.scripted_server import ScriptedServer

PROMPT = "A red circle on the left and a blue square on the right with the word CAT written below"
GOOD = Scene((Obj("circle", "red", "large", "left"), Obj("square", "blue", "large", "right")), "CAT")
BAD = Scene((Obj("circle", "red", "large", "left"),), "CAP", ("noise",))
TEMPLATES = TemplateSet(name="demo", **JUDGE_TEMPLATES)


def img(scene: Scene):
    return load_image(render_png(scene))


def ask(teacher: DemoTeacher, messages, seed: int = 0) -> str:
    gen = asyncio.run(teacher.agenerate(messages, SamplingParams(temperature=0.7, seed=seed)))
    assert gen.ok, gen.error
    return gen.text


def test_a_noise_free_teacher_writes_the_truth_in_the_released_pointwise_format():
    text = ask(DemoTeacher(noise=0.0), build_messages("t2i", "pointwise", PROMPT, [img(BAD)], templates=TEMPLATES))
    res = parse_critique(text, "t2i")
    assert res.ok, res.error
    assert res.scores == {"text_faithfulness": 2.5, "image_faithfulness": None, "physical_quality": 2.5,
                          "text_rendering": 2.0}
    # Each defect is named concretely, in the words of the base student's pretraining.
    assert res.justifications["text_faithfulness"] == "the blue square is missing."
    assert res.justifications["physical_quality"] == "the image is noisy."
    assert res.justifications["text_rendering"] == "the word reads CAP, not CAT."
    assert res.refined_request == ("Draw every listed object exactly once. Spell the word exactly. "
                                   "Render it clean and sharp, with no noise, blur or seams.")


def test_a_noise_free_teacher_prefers_the_better_image_in_the_pairwise_format():
    for a, b, winner in ((GOOD, BAD, "A"), (BAD, GOOD, "B")):
        text = ask(DemoTeacher(noise=0.0), build_messages("t2i", "pairwise", PROMPT, [img(a), img(b)], templates=TEMPLATES))
        res = parse_comparison(text, "t2i")
        assert res.ok and res.winner == winner


def test_edits_are_judged_on_four_dimensions_with_the_source_in_view():
    src = Scene((Obj("circle", "red", "large", "left"), Obj("square", "blue", "large", "right")))
    done = Scene((Obj("circle", "green", "large", "left"), src.objects[1]))
    spoiled = Scene((Obj("circle", "green", "large", "left"),))
    msgs = build_messages("edit", "pairwise", "Change the red circle to green", [img(spoiled), img(done)], [img(src)],
                          TEMPLATES)
    res = parse_comparison(ask(DemoTeacher(noise=0.0), msgs), "edit")
    assert res.ok and res.winner == "B"
    assert res.scores_a["image_faithfulness"] == 2.5 and res.scores_b["image_faithfulness"] == 4.0
    assert res.scores_a["text_rendering"] is None


def test_noise_corrupts_about_the_configured_share_of_answers():
    teacher = DemoTeacher(noise=0.3)
    msgs = build_messages("t2i", "pointwise", PROMPT, [img(BAD)], templates=TEMPLATES)
    truth = sorted(d.code for d in find_defects(parse_request(PROMPT), BAD))
    intent = parse_request(PROMPT)
    wrong = sum(sorted(d.code for d in claimed_defects(ask(teacher, msgs, seed), intent)["image"]) != truth
                for seed in range(300))
    assert 0.2 < wrong / 300 < 0.4
    assert ask(teacher, msgs, 5) == ask(teacher, msgs, 5)  # deterministic per seed


def test_under_an_anchor_the_teacher_may_rationalise_scores_but_never_its_prose():
    # Perception says A (GOOD) is better; the anchor claims B. With rationalize=1 every disagreeing
    # answer shifts its scores toward B while the justifications still describe what it saw.
    phrase = "People who compared these two images side by side judged Image B to be the better result for this request."
    msgs = build_messages("t2i", "pairwise", PROMPT, [img(GOOD), img(BAD)], templates=TEMPLATES)
    msgs[-1]["content"].append({"type": "text", "text": "\n" + phrase})
    res = parse_comparison(ask(DemoTeacher(noise=0.0, rationalize=1.0), msgs), "t2i")
    assert res.winner == "B"
    assert "the image is noisy" in (res.justifications["physical_quality"] or "")
    honest = parse_comparison(ask(DemoTeacher(noise=0.0, rationalize=0.0), msgs), "t2i")
    assert honest.winner == "A"  # left inconsistent: PARROT's consistency check rejects it


def test_re_prediction_follows_the_notes_and_ends_with_a_final_verdict():
    intent = parse_request(PROMPT)
    notes = pairwise_answer(intent, find_defects(intent, BAD), [])  # the notes blame A
    notes = "\n".join(line for line in notes.splitlines() if "Score" not in line and "Winner" not in line)
    msgs = build_messages("t2i", "pairwise", PROMPT, [img(GOOD), img(GOOD)], templates=TEMPLATES)
    msgs[-1]["content"].append({"type": "text", "text": f"\n<notes>\n{notes}\n</notes>\nFinal verdict please."})
    text = ask(DemoTeacher(noise=0.0, repredict_noise=0.0), msgs)
    assert parse_comparison(text, "t2i").winner == "B"  # the images are equal; the notes decide
    assert parse_final_verdict(text) == "B"


def test_defect_phrases_read_back_exactly():
    intent = parse_request(PROMPT)
    defects = find_defects(intent, BAD)
    answer = pointwise_answer(intent, defects)
    assert sorted(d.code for d in claimed_defects(answer, intent)["image"]) == sorted(d.code for d in defects)
    assert [d.code for d in read_defects("two requested objects are missing; visible noise")] == [
        "missing", "missing", "noise"]


def test_every_critique_reads_back_to_the_defects_it_names_including_made_up_ones():
    # 3,000 random requests of the world (40% edits), each judged truly and with one perception
    # error (a missed or a hallucinated defect, named concretely): reading the critique back gives
    # exactly the defects written, per dimension. PARROT's re-prediction and the demo's error
    # measurements rely on this.
    import random

    from rationalrewards.demo.generator import draw_scene
    from rationalrewards.demo.teacher import corrupt
    from rationalrewards.demo.world import sample_task

    rng = random.Random(1)
    for i in range(3000):
        task = sample_task(rng, f"t{i}", edit_rate=0.4, cue_rate=0.2)
        intent, scene = draw_scene(task.prompt, source=task.intent.source, seed=i)
        truth = find_defects(intent, scene)
        for written in (truth, corrupt(intent, truth, rng)):
            back = claimed_defects(pointwise_answer(intent, written), intent)["image"]
            assert sorted((d.dim, d.code) for d in back) == sorted((d.dim, d.code) for d in written), task.prompt
            pair = claimed_defects(pairwise_answer(intent, written, truth), intent)
            assert sorted((d.dim, d.code) for d in pair["A"]) == sorted((d.dim, d.code) for d in written)


def test_an_edit_critique_says_what_the_image_shows_against_what_was_asked():
    src = Scene((Obj("circle", "red", "large", "left"), Obj("square", "blue", "large", "right")))
    intent = parse_request("Change the red circle to green", src)
    untouched = Scene(src.objects)
    spoiled = Scene((Obj("circle", "green", "large", "left"),))
    assert [(d.code, d.detail) for d in find_defects(intent, untouched)] == [
        ("not_applied", "the circle on the left turned from green to red")]
    assert [(d.code, d.detail) for d in find_defects(intent, spoiled)] == [
        ("changed_other", "the blue square on the right was removed")]
    # The same words mean "not made" on the edited slot and "something else changed" elsewhere.
    assert [d.code for d in read_defects("the circle on the left turned from green to red", intent)] == ["not_applied"]
    assert [d.code for d in read_defects("the circle on the left turned from green to yellow", intent)] == [
        "wrong_change"]
    assert [d.code for d in read_defects("the blue square on the right was removed", intent)] == ["changed_other"]


def test_images_outside_the_world_are_a_visible_failure_not_a_guess():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "white").save(buf, format="PNG")
    msgs = build_messages("t2i", "pointwise", PROMPT, [load_image(buf.getvalue())], templates=TEMPLATES)
    gen = asyncio.run(DemoTeacher().agenerate(msgs, SamplingParams()))
    assert not gen.ok and "rr-scene" in (gen.error or "")


def test_the_teacher_is_a_registered_backend_with_validated_settings():
    teacher = create_backend("demo-teacher", noise=0.1)
    assert isinstance(teacher, DemoTeacher) and teacher.describe()["noise"] == 0.1
    with pytest.raises(ValueError, match="noise"):
        DemoTeacher(noise=1.5)


def test_the_teacher_serves_over_http_through_the_openai_client():
    teacher = DemoTeacher(noise=0.0)
    with ScriptedServer(teacher_responder(teacher)) as server:
        rm = RewardModel.from_openai(server.base_url, "demo-teacher", templates=TEMPLATES)
        try:
            cmp = rm.compare(PROMPT, render_png(BAD), render_png(GOOD), swap=True)
            crit = rm.critique(PROMPT, render_png(BAD))
        finally:
            rm.close()
    assert cmp.ok and cmp.winner == "B" and cmp.position_consistent
    assert crit.ok and crit.scores["physical_quality"] == 2.5
    assert server.chat_request_count == 3
