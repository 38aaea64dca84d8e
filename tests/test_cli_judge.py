"""The console script: critique, compare and parse, exit codes, batch resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from holdgate import HoldAfter, saved_ok_rows, wait_for_lines
from rationalrewards.testing.scripted_server import Reply, ScriptedServer, critique_text, judge_responder

EXE = str(Path(sys.executable).parent / "rationalrewards")
T2I = {"text_faithfulness": 3.5, "physical_quality": 2.5, "text_rendering": None}


def run(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NO_COLOR": "1"})


@pytest.fixture
def images(tmp_path):
    red = tmp_path / "red.png"
    Image.new("RGB", (48, 48), (220, 30, 30)).save(red)
    blue = tmp_path / "blue.png"
    Image.new("RGB", (48, 48), (30, 30, 220)).save(blue)
    return red, blue


def test_help_works_offline_for_every_command():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("critique", "compare", "parse"):
        assert cmd in out.stdout
        assert run(cmd, "--help").returncode == 0


def test_critique_json_against_a_server(images):
    with ScriptedServer(judge_responder(T2I)) as server:
        out = run("critique", "--prompt", "a red ball", "--image", str(images[0]),
                  "--base-url", server.base_url, "--model", "judge", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["ok"] and res["task"] == "t2i"
    assert res["reward"] == pytest.approx(2 / 3)
    assert set(res["scores"]) == {"text_faithfulness", "physical_quality", "text_rendering", "image_faithfulness"}
    for key in ("id", "error", "justifications", "summary", "refinement_comments", "refined_request", "raw"):
        assert key in res


def test_critique_human_output_and_edit_task(images):
    with ScriptedServer(judge_responder({**T2I, "image_faithfulness": 3.0})) as server:
        out = run("critique", "--prompt", "make it blue", "--image", str(images[1]), "--source", str(images[0]),
                  "--base-url", server.base_url, "--model", "judge")
    assert out.returncode == 0, out.stderr
    assert "edit critique" in out.stdout and "image_faithfulness" in out.stdout and "reward" in out.stdout


def test_exit_codes_parse_backend_and_input(images, tmp_path):
    with ScriptedServer(lambda req: "no structure here") as server:
        out = run("critique", "--prompt", "x", "--image", str(images[0]), "--base-url", server.base_url,
                  "--model", "m", "--json")
    assert out.returncode == 3
    assert json.loads(out.stdout)["ok"] is False
    dead = run("critique", "--prompt", "x", "--image", str(images[0]), "--base-url", "http://127.0.0.1:9/v1",
               "--model", "m", "--max-retries", "0", "--json")
    assert dead.returncode == 4
    missing = run("critique", "--prompt", "x", "--image", str(tmp_path / "nope.png"), "--base-url",
                  "http://127.0.0.1:9/v1", "--model", "m")
    assert missing.returncode == 2 and "nope.png" in missing.stdout + missing.stderr
    no_backend = run("critique", "--prompt", "x", "--image", str(images[0]))
    assert no_backend.returncode == 2 and "--base-url" in no_backend.stderr


def test_compare_with_swap(images):
    with ScriptedServer(judge_responder()) as server:
        out = run("compare", "--prompt", "x", "--image-a", str(images[0]), "--image-b", str(images[1]), "--swap",
                  "--base-url", server.base_url, "--model", "judge", "--json")
        assert server.chat_request_count == 2
    res = json.loads(out.stdout)
    # The default scripted judge always prefers whatever is shown first: swap exposes it.
    assert out.returncode == 0 and res["winner"] == "tie" and len(res["orders"]) == 2


def test_parse_reads_stdin_and_files(tmp_path):
    text = critique_text("edit", {"text_faithfulness": 4, "image_faithfulness": 2, "physical_quality": 3,
                                  "text_rendering": None})
    out = run("parse", "--task", "edit", "--json", stdin=text)
    assert out.returncode == 0
    assert json.loads(out.stdout)["reward"] == pytest.approx(2 / 3)
    f = tmp_path / "raw.txt"
    f.write_text(text.split("3. Physical")[0])
    cut = run("parse", str(f), "--task", "edit", "--json")
    assert cut.returncode == 3
    assert "Physical and Visual Quality" in json.loads(cut.stdout)["error"]
    assert run("parse", "--task", "video", stdin=text).returncode == 2


def write_batch(tmp_path: Path, n: int, red: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "img.png").write_bytes(red.read_bytes())
    lines = [json.dumps({"id": f"item-{i}", "prompt": f"a red ball number {i}", "image": "img.png"}) for i in range(n)]
    path = folder / "requests.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_batch_resolves_paths_relative_to_the_jsonl_and_retries_failures(tmp_path, images):
    requests = write_batch(tmp_path, 6, images[0])
    out = tmp_path / "out" / "results.jsonl"
    faults = [Reply(status=400)] * 2  # two items fail permanently (4xx is not retried)
    with ScriptedServer(judge_responder(T2I), faults=faults) as server:
        first = run("critique", "--input", str(requests), "--output", str(out), "--base-url", server.base_url,
                    "--model", "m", "--concurrency", "1")
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert first.returncode == 0, first.stderr
        assert [r["id"] for r in rows] == [f"item-{i}" for i in range(6)]
        assert sum(not r["ok"] for r in rows) == 2
        second = run("critique", "--input", str(requests), "--output", str(out), "--base-url", server.base_url,
                     "--model", "m")
        assert second.returncode == 0
        assert server.chat_request_count == 6 + 2  # only the failed ones were asked again
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and all(r["ok"] for r in rows)


def test_batch_resume_after_kill_loses_and_duplicates_nothing(tmp_path, images):
    n = 40
    requests = write_batch(tmp_path, n, images[0])
    out = tmp_path / "results.jsonl"
    gate = HoldAfter(judge_responder(T2I), n=10)  # requests 11+ wait: the kill lands mid-run
    with ScriptedServer(gate) as server:
        proc = subprocess.Popen([EXE, "critique", "--input", str(requests), "--output", str(out), "--base-url",
                                 server.base_url, "--model", "m", "--concurrency", "2"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            gate.wait_until_holding()
            wait_for_lines(out, 8)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        gate.release()
        partial = len(out.read_text().splitlines())
        assert 8 <= partial <= 10
        saved = saved_ok_rows(out)
        before = server.chat_request_count
        again = run("critique", "--input", str(requests), "--output", str(out), "--base-url", server.base_url,
                    "--model", "m", "--concurrency", "8")
        assert again.returncode == 0, again.stderr
        asked = server.chat_request_count - before
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"item-{i}" for i in range(n)]
    assert all(r["ok"] for r in rows)
    # The rerun asks exactly for what was not saved: nothing finished is redone, nothing is lost.
    assert asked == n - saved


def test_compare_batch(tmp_path, images):
    lines = [{"id": "p1", "prompt": "x", "image_a": str(images[0]), "image_b": str(images[1])},
             {"id": "p2", "prompt": "x", "image_a": str(images[1]), "image_b": str(images[0])}]
    src = tmp_path / "pairs.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines))
    out = tmp_path / "cmp.jsonl"
    with ScriptedServer(judge_responder()) as server:
        res = run("compare", "--input", str(src), "--output", str(out), "--base-url", server.base_url, "--model", "m")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["winner"] for r in rows] == ["A", "A"]


def test_a_bad_batch_line_is_a_failed_row_naming_the_line_and_the_rest_still_runs(tmp_path, images):
    (tmp_path / "a.png").write_bytes(images[0].read_bytes())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "x", "image": "a.png"}\n{"id": "b", "image": "b.png"}\n')
    out_path = tmp_path / "o.jsonl"
    with ScriptedServer(judge_responder(T2I)) as server:
        out = run("critique", "--input", str(bad), "--output", str(out_path), "--base-url", server.base_url,
                  "--model", "m")
        strict = run("critique", "--input", str(bad), "--output", str(out_path), "--base-url", server.base_url,
                     "--model", "m", "--strict")
    assert out.returncode == 0, out.stderr
    assert "bad.jsonl:2" in out.stderr and "prompt" in out.stderr
    rows = {r["id"]: r for r in map(json.loads, out_path.read_text().splitlines())}
    assert rows["a"]["ok"] is True
    assert rows["b"]["ok"] is False and rows["b"]["error_kind"] == "input"
    assert "bad.jsonl:2" in rows["b"]["error"] and "prompt" in rows["b"]["error"]
    assert strict.returncode == 2  # --strict: any failed item makes the exit code say so
