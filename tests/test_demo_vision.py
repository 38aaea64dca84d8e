"""The student's vision pretraining: targets name what is where, a short pretraining makes the
tiny tower's visual tokens tell objects apart on images it never saw, and the result is a normal
checkpoint that the rest of the pipeline loads."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from rationalrewards.demo.vision import (
    VISION_MARKER,
    prepare_vision,
    pretrain_vision,
    sample_scenes,
    scene_targets,
)
from rationalrewards.demo.world import Obj, Scene


def test_targets_name_the_object_in_each_slot_the_letters_and_the_artefacts():
    scene = Scene((Obj("circle", "red", "small", "left"), Obj("square", "blue", "large", "right")), "CAT", ("blur",))
    slots, letters, arts = scene_targets(scene)
    assert slots[0] > 0 and slots[1] == 0 and slots[2] > 0 and slots[0] != slots[2]
    assert letters == [3, 1, 20]  # C, A, T (0 means no letter)
    assert arts == [0.0, 1.0, 0.0]  # noise, blur, seam
    recoloured = Scene((Obj("circle", "green", "small", "left"),))
    assert scene_targets(recoloured)[0][0] not in (0, slots[0])
    assert scene_targets(Scene(()))[:2] == ([0, 0, 0], [0, 0, 0])


def test_pretraining_images_come_from_their_own_stream_and_include_edit_sources():
    a, b = sample_scenes(200, seed=0), sample_scenes(200, seed=0)
    assert a == b and sample_scenes(200, seed=1) != a
    assert len({json.dumps(s.to_json(), sort_keys=True) for s in a}) > 100


@pytest.mark.slow
def test_a_short_pretraining_teaches_the_tower_to_tell_objects_apart(tmp_path):
    from rationalrewards.testing.tiny_models import build_tiny_qwen3vl

    model = build_tiny_qwen3vl(tmp_path / "m", hidden_size=64, image_size_cap=96 * 96)
    stats = pretrain_vision(model, images=768, steps=300, batch_size=32, heldout=192, seed=3)
    held = sample_scenes(768 + 192, seed=3)[768:]
    majority = max(Counter(c for s in held for c in scene_targets(s)[0]).values()) / (3 * len(held))
    before, after = stats["heldout_accuracy_before"], stats["heldout_accuracy"]
    # Guessing "empty" everywhere scores the majority rate; the tower must do clearly better.
    assert after["slots"] > majority + 0.15 and after["slots"] > before["slots"]
    assert after["artefacts"] > 0.8

    prepared = prepare_vision(model, pretrain_steps=0, seed=3)
    assert prepared["pretraining"] is None and prepared["conditioning"]["images"] == 64
    assert json.loads((model / VISION_MARKER).read_text()) == prepared
