"""Scripted judges live in one place, rationalrewards.testing.judges, registered by name."""

from __future__ import annotations

import base64
import importlib
import io
import subprocess
import sys
import types

import httpx
import pytest
from PIL import Image

from rationalrewards import RewardModel
from rationalrewards.testing import judges
from rationalrewards.testing.judges import judge, judge_factory, judge_names, register_judge
from rationalrewards.testing.scripted_server import ScriptedServer, critique_text

BUILT_IN = ("parrot-teacher", "pixel", "released", "toy-critic")


@pytest.fixture
def images(tmp_path):
    paths = {}
    for name, colour in (("bright", (240, 40, 40)), ("dark", (40, 40, 40))):
        paths[name] = str(tmp_path / f"{name}.png")
        Image.new("RGB", (32, 32), colour).save(paths[name])
    return paths


def test_the_built_in_judges_are_registered_with_a_description():
    names = judge_names()
    assert set(BUILT_IN) <= set(names)
    assert all(names[n] for n in BUILT_IN)


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_built_in_judge_answers_in_the_released_format(name, images):
    with ScriptedServer(judge(name)) as server:
        rm = RewardModel.from_openai(server.base_url, model="scripted")
        try:
            point = rm.critique("a red square", images["bright"])
            pair = rm.compare("a red square", images["bright"], images["dark"])
        finally:
            rm.close()
    assert point.ok, point.error
    assert pair.ok, pair.error
    assert set(point.scores) >= {"text_faithfulness", "physical_quality"}


def test_the_pixel_judge_prefers_the_brighter_redder_image(images):
    with ScriptedServer(judge("pixel")) as server:
        rm = RewardModel.from_openai(server.base_url, model="scripted")
        try:
            bright, dark = rm.critique("x", images["bright"]), rm.critique("x", images["dark"])
            pair = rm.compare("x", images["dark"], images["bright"])
        finally:
            rm.close()
    assert bright.reward > dark.reward
    assert pair.winner == "B"


def test_options_reach_the_judge_factory(images):
    with ScriptedServer(judge("toy-critic", pairwise_winner="A")) as server:
        rm = RewardModel.from_openai(server.base_url, model="scripted")
        try:
            pair = rm.compare("x", images["dark"], images["bright"])
        finally:
            rm.close()
    assert pair.winner == "A"  # forced, although B is brighter


def test_an_unknown_judge_is_a_key_error_listing_the_known_ones():
    with pytest.raises(KeyError, match=r"no scripted judge named 'nope'; known: .*pixel"):
        judge("nope")


def test_a_registered_judge_is_served_and_a_taken_name_is_refused():
    def always_three(**_options):
        scores = {"text_faithfulness": 3.0, "physical_quality": 3.0, "text_rendering": None}
        return lambda req: critique_text("t2i", scores)

    register_judge("test-always-three", always_three, "every score 3")
    try:
        assert judge_names()["test-always-three"] == "every score 3"
        assert judge_factory("test-always-three") is always_three
        with pytest.raises(ValueError, match="already registered"):
            register_judge("test-always-three", always_three)
        register_judge("test-always-three", always_three, "replaced", replace=True)
        assert judge_names()["test-always-three"] == "replaced"
        with pytest.raises(ValueError, match="judge name"):
            register_judge("no spaces please", always_three)
    finally:
        judges._REGISTRY.pop("test-always-three", None)
        judges._DESCRIPTIONS.pop("test-always-three", None)


def test_no_submodule_shadows_an_exported_name():
    # Importing a submodule sets it as a package attribute; a submodule named like an exported
    # function would replace that function once anything imported the submodule.
    for module in ("critic", "pixel", "teacher"):
        importlib.import_module(f"rationalrewards.testing.judges.{module}")
    for name in judges.__all__:
        assert not isinstance(getattr(judges, name), types.ModuleType), name


def test_the_stand_alone_server_serves_a_judge_by_name():
    proc = subprocess.Popen([sys.executable, "-m", "rationalrewards.testing.judges", "--judge", "toy-critic"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        ready, base_url = proc.stdout.readline().split()
        assert ready == "READY"
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (40, 40, 40)).save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        body = {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": "User Instruction: a grey square"},
        ]}]}
        r = httpx.post(f"{base_url}/chat/completions", json=body, timeout=30)
        assert r.status_code == 200
        # The toy critic, not the default judge: it asks for one more "brighter" than it sees.
        assert "## Refined Request: a grey square, brighter" in r.json()["choices"][0]["message"]["content"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_stand_alone_server_refuses_an_unknown_judge():
    res = subprocess.run([sys.executable, "-m", "rationalrewards.testing.judges", "--judge", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "invalid choice: 'nope'" in res.stderr
