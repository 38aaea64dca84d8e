"""Every option of critique / compare / parse reaches the code it names.

Each test runs the real console script against the scripted judge server and checks what the
server received (model, sampling, requests in flight, prompt text) or what the result says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from rationalrewards.critique.prompts import TEMPLATE_FILES, default_templates
from rationalrewards.testing.scripted_server import ScriptedServer, critique_text, judge_responder

EXE = str(Path(sys.executable).parent / "rationalrewards")
T2I = {"text_faithfulness": 3.5, "physical_quality": 2.5, "text_rendering": None}


def run(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NO_COLOR": "1", "COLUMNS": "250"})


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "img.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(path)
    return path


def critique_json(server: ScriptedServer, image: Path, *extra: str) -> dict:
    res = run("critique", "--prompt", "a red ball", "--image", str(image), "--base-url", server.base_url,
              "--json", *extra)
    assert res.returncode in (0, 3), res.stderr
    return json.loads(res.stdout)


def test_model_and_sampling_options_reach_the_request(image):
    with ScriptedServer(judge_responder(T2I)) as server:
        critique_json(server, image, "--model", "judge-7", "--max-tokens", "123", "--temperature", "0.3",
                      "--seed", "11")
        body = server.last_request.json
    assert body["model"] == "judge-7"
    assert body["max_tokens"] == 123
    assert body["temperature"] == pytest.approx(0.3)
    assert body["seed"] == 11


def test_scores_only_stops_before_the_refinement_tail(image, tmp_path):
    with ScriptedServer(judge_responder(T2I)) as server:
        critique_json(server, image, "--model", "m", "--scores-only")
        single = server.last_request.json
        requests = tmp_path / "r.jsonl"
        requests.write_text(json.dumps({"id": "a", "prompt": "p", "image": str(image)}) + "\n")
        res = run("critique", "--input", str(requests), "--output", str(tmp_path / "o.jsonl"), "--base-url",
                  server.base_url, "--model", "m", "--scores-only")
        assert res.returncode == 0, res.stderr
        batch = server.last_request.json
    assert single.get("stop") and batch.get("stop") == single["stop"]


def _batch(tmp_path: Path, image: Path, n: int) -> Path:
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps({"id": f"i{i}", "prompt": f"p{i}", "image": str(image)}) + "\n"
                                for i in range(n)))
    return requests


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_bounds_the_requests_in_flight(tmp_path, image, concurrency):
    requests = _batch(tmp_path, image, 8)
    # Each answer takes a while, so the client has every chance to exceed the bound if it would.
    with ScriptedServer(judge_responder(T2I), latency_s=0.3) as server:
        res = run("critique", "--input", str(requests), "--output", str(tmp_path / "o.jsonl"), "--base-url",
                  server.base_url, "--model", "m", "--concurrency", str(concurrency))
        assert res.returncode == 0, res.stderr
        in_flight = server.max_chat_in_flight
    assert in_flight <= concurrency
    if concurrency > 1:
        assert in_flight > 1  # the option is used, not a fixed 1


def test_timeout_and_max_retries_reach_the_client(image):
    with ScriptedServer(judge_responder(T2I), latency_s=30) as server:
        res = run("critique", "--prompt", "p", "--image", str(image), "--base-url", server.base_url,
                  "--model", "m", "--timeout", "0.5", "--max-retries", "1", "--json")
        asked = server.chat_request_count
    assert res.returncode == 4, res.stderr
    assert "tim" in json.loads(res.stdout)["error"].lower()  # "timed out" / "timeout"
    assert asked == 2  # the first attempt and one retry


def test_templates_option_sends_the_users_prompt_text(tmp_path, image):
    templates = tmp_path / "my-templates"
    templates.mkdir()
    default = default_templates()
    for name in TEMPLATE_FILES:  # the packaged set, written out as a user's own folder
        (templates / name).write_text(getattr(default, name[:-4]), encoding="utf-8")
    t2i = templates / "t2i_pointwise.txt"
    t2i.write_text(t2i.read_text() + "\nZEBRA-MARKER: answer in the usual format.\n")
    with ScriptedServer(judge_responder(T2I)) as server:
        res = critique_json(server, image, "--model", "m", "--templates", str(templates))
        sent = server.last_request.text()
    assert res["ok"]
    assert "ZEBRA-MARKER" in sent
    missing = run("critique", "--prompt", "p", "--image", str(image), "--base-url", "http://127.0.0.1:9/v1",
                  "--templates", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_aggregation_changes_the_reward(image):
    with ScriptedServer(judge_responder(T2I)) as server:
        default = critique_json(server, image, "--model", "m")
        tf_only = critique_json(server, image, "--model", "m", "--aggregation", "text_faithfulness=1")
    assert default["reward"] == pytest.approx(((3.5 + 2.5) / 2 - 1) / 3)
    assert tf_only["reward"] == pytest.approx((3.5 - 1) / 3)


def test_parse_takes_aggregation_and_tie_tolerance():
    text = critique_text("t2i", T2I)
    res = run("parse", "--json", "--aggregation", "physical_quality=1", stdin=text)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["reward"] == pytest.approx((2.5 - 1) / 3)
    bad = run("parse", "--aggregation", "physical_quality=-2", stdin=text)
    assert bad.returncode == 2 and "--aggregation" in bad.stderr
    bom = run("parse", "--json", stdin="\ufeff" + text)
    assert bom.returncode == 0


def test_allow_na_decides_which_dimensions_may_be_na(image):
    na_quality = {"text_faithfulness": 3.5, "physical_quality": None, "text_rendering": None}
    with ScriptedServer(judge_responder(na_quality)) as server:
        strict = critique_json(server, image, "--model", "m")
        lenient = critique_json(server, image, "--model", "m", "--allow-na", "physical_quality,text_rendering")
        everything = critique_json(server, image, "--model", "m", "--allow-na", "all")
    assert strict["ok"] is False and "physical_quality" in strict["error"].lower().replace(" ", "_")
    assert lenient["ok"] is True and lenient["reward"] == pytest.approx((3.5 - 1) / 3)
    assert everything["ok"] is True
    text = critique_text("t2i", na_quality)
    assert run("parse", stdin=text).returncode == 3
    assert run("parse", "--allow-na", "all", stdin=text).returncode == 0


def test_compare_mode_and_swap_reach_the_judge(tmp_path, image):
    other = tmp_path / "other.png"
    Image.new("RGB", (40, 40), (30, 30, 200)).save(other)
    with ScriptedServer(judge_responder(T2I)) as server:
        base = ("compare", "--prompt", "p", "--image-a", str(image), "--image-b", str(other), "--base-url",
                server.base_url, "--model", "m", "--json")
        pairwise = run(*base)
        n_pairwise = server.chat_request_count
        swapped = run(*base, "--swap")
        n_swapped = server.chat_request_count - n_pairwise
        pointwise = run(*base, "--mode", "pointwise")
        n_pointwise = server.chat_request_count - n_pairwise - n_swapped
    assert pairwise.returncode == 0 and json.loads(pairwise.stdout)["mode"] == "pairwise"
    assert n_pairwise == 1
    assert n_swapped == 2 and len(json.loads(swapped.stdout)["orders"]) == 2
    assert json.loads(pointwise.stdout)["mode"] == "pointwise" and n_pointwise == 2


def test_tie_tolerance_turns_a_close_verdict_into_a_tie(tmp_path, image):
    other = tmp_path / "other.png"
    Image.new("RGB", (40, 40), (30, 30, 200)).save(other)
    close = ({"text_faithfulness": 3.0, "physical_quality": 3.0, "text_rendering": None},
             {"text_faithfulness": 3.0, "physical_quality": 2.5, "text_rendering": None})
    with ScriptedServer(judge_responder(pairwise=close)) as server:
        base = ("compare", "--prompt", "p", "--image-a", str(image), "--image-b", str(other), "--base-url",
                server.base_url, "--model", "m", "--json")
        strict = json.loads(run(*base).stdout)
        tolerant = json.loads(run(*base, "--tie-tolerance", "1").stdout)
    assert strict["winner"] == "A"
    assert tolerant["winner"] == "tie"


def test_compare_batch_pins_mode_swap_and_tie_tolerance(tmp_path, image):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "p1", "prompt": "p", "image_a": str(image), "image_b": str(image)}) + "\n")
    out = tmp_path / "cmp.jsonl"
    with ScriptedServer(judge_responder(T2I)) as server:
        base = ("compare", "--input", str(pairs), "--output", str(out), "--base-url", server.base_url,
                "--model", "m")
        assert run(*base).returncode == 0
        for extra, word in ((("--swap",), "swap"), (("--mode", "pointwise"), "mode"),
                            (("--tie-tolerance", "0.5"), "tie_tolerance")):
            res = run(*base, *extra)
            assert res.returncode == 2 and word in res.stderr, (extra, res.stderr)
