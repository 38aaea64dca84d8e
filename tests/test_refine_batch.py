"""Batch refinement (prompt files and edit sets), its summary, resume after failures and kills, and
the ``rationalrewards refine`` command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from holdgate import wait_for_lines
from rationalrewards import RewardModel
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.cli.main import app
from rationalrewards.io import InputFileError
from rationalrewards.refine import CallableGenerator, RefineConfig, arefine_batch, read_items
from rationalrewards.refine.toy import toy_generator
from rationalrewards.testing.judges import toy_critic
from rationalrewards.testing.scripted_server import Reply, ScriptedServer

TOY = "python:rationalrewards.refine.toy:toy_generator"


def critic_for(server: ScriptedServer) -> RewardModel:
    return RewardModel(OpenAIBackend(server.base_url, "critic", backoff_base=0.01, backoff_max=0.02, max_retries=1))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def prompts(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("a grey square\n\na grey circle\na grey triangle\n")
    return path


async def batch(server, input_path, out, config, generator=TOY, **kw):
    critic = critic_for(server)
    try:
        return await arefine_batch(input_path, out, generator=generator, critic=critic, config=config, **kw)
    finally:
        await critic.aclose()


async def test_a_prompt_file_batch_writes_items_results_summary_and_report(tmp_path, prompts):
    out = tmp_path / "run"
    with ScriptedServer(toy_critic()) as server:
        summary = await batch(server, prompts, out, RefineConfig(rounds=2, candidates=2, threshold=0.7, baseline=True),
                              concurrency=2)
    rows = read_jsonl(out / "results.jsonl")
    assert [r["id"] for r in rows] == ["line-1", "line-3", "line-4"] and all(r["ok"] for r in rows)
    for r in rows:
        assert (out / r["out"] / "trajectory.json").is_file() and (out / r["out"] / "report.html").is_file()
        assert r["final"]["reward"] > r["round0"]["reward"] and r["improved"] is True
        assert r["baseline"]["generations"] == r["generator_calls"] == 6
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["n_items"] == 3 and summary["n_ok"] == 3 and summary["n_failed"] == 0
    mr = summary["mean_reward"]
    assert mr["round0"] < mr["baseline"] < mr["final"]
    assert set(summary["mean_scores"]["round0"]) == {"text_faithfulness", "physical_quality"}
    assert summary["mean_scores"]["final"]["text_faithfulness"] > summary["mean_scores"]["round0"]["text_faithfulness"]
    assert summary["share_improved"] == 1.0 and summary["stop_reasons"] == {"rounds": 3}
    assert summary["generator_calls"]["total"] == 18 and summary["critic_calls"]["total"] == 18
    assert summary["rounds_run"] == {"total": 9, "mean": 3.0}
    assert summary["baseline"]["final_vs_baseline"] == {"wins": 3, "ties": 0, "losses": 0}
    html = (out / "report.html").read_text()
    assert html.count("/report.html'>report</a>") == 3 and "a grey circle" in html


async def test_an_edit_set_reads_sources_relative_to_the_file_and_bad_items_fail_alone(tmp_path):
    data = tmp_path / "edits"
    data.mkdir()
    Image.new("RGB", (32, 32), (60, 60, 60)).save(data / "room.png")
    (data / "set.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"id": "e/1", "instruction": "make it lighter", "source": "room.png", "seed": 7},
        {"id": "e2", "prompt": "make it lighter", "source": "missing.png"},
    ]) + "\n")
    out = tmp_path / "run"
    with ScriptedServer(toy_critic()) as server:
        summary = await batch(server, data / "set.jsonl", out, RefineConfig(rounds=1, candidates=1, threshold=None))
    rows = {r["id"]: r for r in read_jsonl(out / "results.jsonl")}
    assert rows["e/1"]["ok"] and rows["e/1"]["task"] == "edit"
    assert rows["e/1"]["out"].startswith("items/e_1-")  # unsafe id characters are replaced, uniquely
    traj = json.loads((out / rows["e/1"]["out"] / "trajectory.json").read_text())
    assert traj["rounds"][0]["seeds"] == [7] and traj["source"] == ["source_0.png"]
    assert not rows["e2"]["ok"] and rows["e2"]["error_kind"] == "input" and "missing.png" in rows["e2"]["error"]
    assert summary["n_ok"] == 1 and summary["failed_by_kind"] == {"input": 1}


async def test_a_rerun_skips_finished_items_and_retries_failed_ones_from_where_they_stopped(tmp_path, prompts):
    calls: list[str] = []
    broken = {"on": True}

    def gen(request, *, seed, source=None):
        calls.append(request)
        if broken["on"] and "circle" in request and "brighter" in request:
            raise RuntimeError("device lost")
        return toy_generator(request, seed=seed)

    cfg = RefineConfig(rounds=2, candidates=1, threshold=None)
    out = tmp_path / "run"
    with ScriptedServer(toy_critic()) as server:
        first = await batch(server, prompts, out, cfg, generator=CallableGenerator(gen))
        assert first["n_ok"] == 2 and first["failed_by_kind"] == {"generator": 1}
        assert len(calls) == 3 + 3 + 2  # the circle got through round 0, then its generator broke
        calls.clear()
        broken["on"] = False
        second = await batch(server, prompts, out, cfg, generator=CallableGenerator(gen))
    assert second["n_ok"] == 3 and second["n_failed"] == 0
    assert calls == ["a grey circle, brighter", "a grey circle, brighter, brighter"]  # nothing redone
    rows = read_jsonl(out / "results.jsonl")
    assert [r["id"] for r in rows] == ["line-1", "line-3", "line-4"]  # one line per item, input order


def test_input_files_are_validated_with_clear_messages(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_items(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "source": "x.png"}\n')
    with pytest.raises(InputFileError, match=r"bad.jsonl:1: missing field prompt \(or instruction\)"):
        read_items(bad)
    bad.write_text('{"prompt": "x", "seed": "7"}\n')
    with pytest.raises(InputFileError, match="seed must be an integer"):
        read_items(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(InputFileError, match="no prompts"):
        read_items(empty)


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------


def cli(*args: str):
    return CliRunner().invoke(app, ["refine", *args])


def test_cli_single_item_prints_json_and_writes_the_trajectory(tmp_path):
    out = tmp_path / "one"
    with ScriptedServer(toy_critic()) as server:
        res = cli("--prompt", "a grey square", "--generator", TOY, "--out", str(out), "--rounds", "2",
                  "--candidates", "1", "--same-seed", "--critic-base-url", server.base_url, "--critic-model", "c", "--json")
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert line["ok"] and line["rounds_run"] == 3 and line["trajectory"] == str(out / "trajectory.json")
    assert line["final"]["request"] == "a grey square, brighter, brighter"
    traj = json.loads((out / "trajectory.json").read_text())
    assert traj["config"]["same_seed"] is True and traj["critic"]["model"] == "c"


def test_cli_batch_emits_json_lines_and_the_summary(tmp_path, prompts):
    out = tmp_path / "b"
    with ScriptedServer(toy_critic()) as server:
        res = cli("--input", str(prompts), "--generator", TOY, "--out", str(out), "--rounds", "1", "--candidates", "1",
                  "--critic-base-url", server.base_url, "--critic-model", "c", "--json", "--limit", "2")
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.strip().splitlines()]
    assert sorted(x["id"] for x in lines) == ["line-1", "line-3"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_items"] == 2 and summary["baseline"]["n"] == 2  # the baseline is on by default in batches
    assert summary["config"]["baseline"] is True


@pytest.mark.parametrize(("args", "code", "message"), [
    ([], 2, "give --prompt"),
    (["--prompt", "x", "--generator", "nope"], 2, "NAME:TARGET"),
    (["--prompt", "x", "--generator", TOY, "--source", "/no/such.png"], 2, "source image not found"),
    (["--prompt", "x", "--generator", TOY, "--refine-from", "magic"], 2, "--refine-from"),
    (["--prompt", "x", "--generator", TOY, "--refine-from", "refiner"], 2, "refiner model"),
])
def test_cli_usage_errors_exit_2(tmp_path, args, code, message):
    if "--generator" not in args:
        args = [*args, "--generator", TOY]
    res = cli(*args, "--out", str(tmp_path / "o"), "--critic-base-url", "http://127.0.0.1:9/v1")
    assert res.exit_code == code
    assert message in " ".join(res.output.split())


def test_cli_exit_codes_follow_the_contract_for_backend_and_parse_failures(tmp_path):
    with ScriptedServer(lambda req: Reply(status=503)) as down:
        res = cli("--prompt", "x", "--generator", TOY, "--out", str(tmp_path / "a"), "--critic-base-url", down.base_url,
                  "--critic-max-retries", "0")
    assert res.exit_code == 4 and "backend" in res.output
    with ScriptedServer(lambda req: "no structure at all") as garbled:
        res = cli("--prompt", "x", "--generator", TOY, "--out", str(tmp_path / "b"), "--critic-base-url",
                  garbled.base_url, "--rounds", "0")
    assert res.exit_code == 3


def test_a_killed_batch_resumes_without_losing_or_duplicating_work(tmp_path):
    # A slow generator that logs every image; the batch is SIGKILLed mid-run and started again.
    log = tmp_path / "calls.log"
    gen_file = tmp_path / "slow_gen.py"
    gen_file.write_text(
        "import os, time\n"
        "from rationalrewards.refine.toy import toy_generator\n"
        "def make(request, *, seed, source=None):\n"
        "    time.sleep(0.15)\n"
        f"    with open({str(log)!r}, 'a') as fh:\n"
        "        fh.write(request + '|' + str(seed) + '\\n')\n"
        "    return toy_generator(request, seed=seed)\n"
    )
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"a grey shape {i}\n" for i in range(6)))
    out = tmp_path / "run"
    with ScriptedServer(toy_critic()) as server:
        cmd = [sys.executable, "-m", "rationalrewards.cli.main", "refine", "--input", str(prompts), "--generator",
               f"python:{gen_file}:make", "--out", str(out), "--rounds", "2", "--candidates", "1", "--threshold", "1.0",
               "--no-baseline", "--concurrency", "1", "--critic-base-url", server.base_url, "--critic-model", "c"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            wait_for_lines(out / "results.jsonl", 2)
            # Two items (3 generations each) are saved; the 7th generation means the kill lands
            # inside the third item rather than between items.
            wait_for_lines(log, 7)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        done_before = len(read_jsonl(out / "results.jsonl"))
        assert 2 <= done_before < 6
        rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    rows = read_jsonl(out / "results.jsonl")
    assert [r["id"] for r in rows] == [f"line-{i}" for i in range(1, 7)] and all(r["ok"] for r in rows)
    calls = log.read_text().splitlines()
    # A clean run generates 6 items x 3 rounds. At most the one round that was being generated
    # when the kill landed is generated twice; finished rounds and items never are.
    assert 18 <= len(calls) <= 19
    assert len(calls) - len(set(calls)) <= 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_ok"] == 6 and summary["generator_calls"]["total"] == 18
