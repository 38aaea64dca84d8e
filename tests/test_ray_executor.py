"""`--executor ray`: every batch stage writes on a 2-CPU Ray instance exactly what it writes locally.

Each stage runs twice against the same scripted judge (whose answers follow the pixels of the
judged images, so a mixed-up item would show): once in this process and once with its judging on
Ray actors. The files must be identical, timings aside. A run killed under Ray resumes locally
asking only for what was not saved, and a Ray worker killed mid-run is replaced by Ray without a
lost or duplicated row.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

# CI installs the [ray] extra (make setup): there a missing Ray is a failure, not a skip.
ray = __import__("ray") if os.environ.get("CI") else pytest.importorskip("ray")

from holdgate import HoldAfter, wait_for_lines  # noqa: E402
from rationalrewards.backends.base import SamplingParams  # noqa: E402
from rationalrewards.cli.main import app  # noqa: E402
from rationalrewards.executors import ExecutorOptions, reward_model  # noqa: E402
from rationalrewards.parrot.config import resolve_config  # noqa: E402
from rationalrewards.parrot.pipeline import Parrot  # noqa: E402
from rationalrewards.testing.judges import judge, scripted_teacher  # noqa: E402
from rationalrewards.testing.scripted_server import ScriptedServer  # noqa: E402

COLOURS = [(250, 20, 20), (20, 250, 20), (20, 20, 250), (240, 240, 20), (250, 250, 250), (10, 10, 10),
           (250, 140, 0), (140, 0, 140), (0, 200, 200), (250, 150, 200)]
TIMING_KEYS = {"latency_s", "timing", "elapsed_s", "wall_s", "started", "finished", "last_run", "out",
               "items_per_s", "duration_s", "throughput", "created_at"}


@pytest.fixture(scope="module")
def ray_address():
    """A local 2-CPU Ray instance for the module (the CLI joins it; subprocesses by its address)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray-data")
    (root / "img").mkdir()
    for i, c in enumerate(COLOURS):
        Image.new("RGB", (24, 24), c).save(root / "img" / f"c{i}.png")
    crit = [{"id": f"t{i}", "prompt": f"a square of colour {i}", "image": f"img/c{i}.png"} for i in range(8)]
    crit.append({"id": "e0", "prompt": "make it blue", "image": "img/c2.png", "source": "img/c0.png"})
    (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in crit))
    pairs = [{"id": f"p{i}", "prompt": f"a bright square {i}", "image_a": f"img/c{i}.png",
              "image_b": f"img/c{(i + 3) % 10}.png", "label": "AB"[i % 2]} for i in range(8)]
    pairs.append({"id": "pe", "prompt": "make it red", "source": "img/c2.png", "image_a": "img/c0.png",
                  "image_b": "img/c5.png", "label": "A"})
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    return root


def opts(server: ScriptedServer, concurrency: int = 4) -> dict[str, Any]:
    return {"base_url": [server.base_url], "model": "judge", "concurrency": concurrency, "max_retries": 0,
            "sampling": SamplingParams()}


def untimed(obj: Any) -> Any:
    """The object without its timings (the only thing allowed to differ between executors)."""
    if isinstance(obj, dict):
        return {k: untimed(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [untimed(v) for v in obj]
    return obj


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """Where two JSON values first differ (pytest's own diff of large nested values is very slow)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{where}.{k}: only in {'ray' if k in a else 'local'}"
            d = first_difference(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} vs {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = first_difference(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{where}: {str(a)[:200]!r} vs {str(b)[:200]!r}"


def assert_same(remote: Any, local: Any) -> None:
    difference = first_difference(remote, local)
    assert difference is None, difference


def rows(path: Path) -> list[dict[str, Any]]:
    return [untimed(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def cli(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def ray_flags(address: str) -> list[str]:
    return ["--executor", "ray", "--ray-address", address, "--ray-workers", "2"]


# -- the same files under both executors --------------------------------------------------------


@pytest.mark.parametrize("command", ["critique", "compare"])
def test_critique_and_compare_batches_write_the_same_rows_in_the_same_order(command, data, ray_address, tmp_path):
    src = data / ("items.jsonl" if command == "critique" else "pairs.jsonl")
    extra = [] if command == "critique" else ["--swap"]
    outs = {}
    with ScriptedServer(judge("pixel")) as server:
        for name, flags in (("local", []), ("ray", ray_flags(ray_address))):
            outs[name] = tmp_path / f"{name}.jsonl"
            cli(command, "--input", str(src), "--output", str(outs[name]), "--base-url", server.base_url,
                "--model", "judge", *extra, *flags)
    local, remote = rows(outs["local"]), rows(outs["ray"])
    assert len(local) == 9 and all(r["ok"] for r in local)
    assert len({json.dumps(r.get("scores") or r.get("scores_a"), sort_keys=True) for r in local}) > 1
    assert_same(remote, local)


def test_eval_writes_the_same_results_and_report(data, ray_address, tmp_path):
    with ScriptedServer(judge("pixel")) as server:
        for name, flags in (("local", []), ("ray", ray_flags(ray_address))):
            cli("eval", "--benchmark", "pairs", "--data", str(data / "pairs.jsonl"), "--out", str(tmp_path / name),
                "--base-url", server.base_url, "--model", "judge", "--no-html", *flags)
    assert_same(rows(tmp_path / "ray" / "results.jsonl"), rows(tmp_path / "local" / "results.jsonl"))
    local = untimed(json.loads((tmp_path / "local" / "report.json").read_text()))
    remote = untimed(json.loads((tmp_path / "ray" / "report.json").read_text()))
    assert_same(remote, local)


def _parquet(data: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def png(i: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), COLOURS[i]).save(buf, format="PNG")
        return buf.getvalue()

    path = data / "items.parquet"
    if not path.exists():
        table = pa.table({"id": [f"q{i}" for i in range(10)], "prompt": [f"square {i}" for i in range(10)],
                          "image": [{"bytes": png(i), "path": None} for i in range(10)]})
        pq.write_table(table, path, row_group_size=4)
    return path


@pytest.mark.parametrize("source", ["jsonl", "parquet"])
def test_curate_keeps_and_rejects_the_same_items(source, data, ray_address, tmp_path):
    src = data / "items.jsonl" if source == "jsonl" else _parquet(data)
    with ScriptedServer(judge("pixel")) as server:
        for name, flags in (("local", []), ("ray", ray_flags(ray_address))):
            cli("curate", "--input", str(src), "--out", str(tmp_path / name), "--min-reward", "0.5",
                "--base-url", server.base_url, "--model", "judge", *flags)
    for f in ("critiques.jsonl", "kept.jsonl", "rejected.jsonl"):
        assert_same(rows(tmp_path / "ray" / f), rows(tmp_path / "local" / f))
    local = rows(tmp_path / "local" / "kept.jsonl")
    assert 0 < len(local) < (9 if source == "jsonl" else 10)


def _parrot_pairs(root: Path) -> Path:
    path = root / "parrot_pairs.jsonl"
    behaviours = ["ok", "ok", "contra", "leak", "fooled", "vague", "ok", "mixed"]
    lines = [{"id": f"r{i}", "prompt": f"{b} a kite of colour {i}", "image_a": f"img/c{i}.png",
              "image_b": f"img/c{i + 1}.png", "label": "AB"[i % 2]} for i, b in enumerate(behaviours)]
    lines.append({"id": "redit", "prompt": "ok make the ball blue", "source": "img/c0.png",
                  "image_a": "img/c2.png", "image_b": "img/c1.png", "label": "A"})
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def parrot_files(out: Path) -> dict[str, Any]:
    files: dict[str, Any] = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if p.is_dir() or rel.startswith("work/") or p.suffix in (".png", ".jpg") or rel in ("config.json",
                                                                                            "summary.md"):
            continue
        files[rel] = untimed(json.loads(p.read_text())) if p.suffix == ".json" else (
            rows(p) if p.suffix == ".jsonl" else p.read_text())
    return files


def test_parrot_anchor_and_filter_write_the_same_run_folder(data, ray_address, tmp_path):
    pairs = _parrot_pairs(data)
    with ScriptedServer(scripted_teacher()) as server:
        for name, executor in (("local", None), ("ray", ExecutorOptions("ray", address=ray_address, workers=2))):
            cfg = resolve_config(overrides={
                "pairs": str(pairs), "out": str(tmp_path / name), "sft": {"val_fraction": 0.3},
                "teacher": {"base_url": [server.base_url], "model": "teacher", "concurrency": 4, "max_retries": 0}})
            Parrot(cfg, executor=executor).run()
    local, remote = parrot_files(tmp_path / "local"), parrot_files(tmp_path / "ray")
    assert {"anchored.jsonl", "filtered.jsonl", "stats.json"} <= set(local)
    kept = [r for r in local["filtered.jsonl"] if r.get("kept")]
    assert 0 < len(kept) < len(local["filtered.jsonl"])
    assert_same(remote, local)


def test_parrot_cli_takes_the_executor_options(data, ray_address, tmp_path):
    pairs = _parrot_pairs(data)
    with ScriptedServer(scripted_teacher()) as server:
        cli("parrot", "anchor", "--pairs", str(pairs), "--out", str(tmp_path / "run"), "--teacher-base-url",
            server.base_url, "--teacher-model", "teacher", "--max-retries", "0", *ray_flags(ray_address))
        anchored = rows(tmp_path / "run" / "anchored.jsonl")
        assert anchored and all(r["generated"] for r in anchored)
        cli("parrot", "filter", "--out", str(tmp_path / "run"), *ray_flags(ray_address))
    assert (tmp_path / "run" / "filtered.jsonl").exists()


# -- failures: a killed driver resumes elsewhere, a killed worker is replaced ---------------------


def test_a_run_killed_under_ray_resumes_locally_asking_only_for_what_was_not_saved(data, ray_address, tmp_path):
    out = tmp_path / "out.jsonl"
    src = data / "items.jsonl"
    gate = HoldAfter(judge("pixel"), n=4)
    with ScriptedServer(gate) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rationalrewards.cli.main", "critique", "--input", str(src), "--output", str(out),
             "--base-url", server.base_url, "--model", "judge", "--concurrency", "2", "--max-retries", "0",
             *ray_flags(ray_address)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            gate.wait_until_holding(timeout=120)
            wait_for_lines(out, 4, timeout=60)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        gate.release()
    saved = rows(out)
    assert 4 <= len(saved) < 9 and len({r["id"] for r in saved}) == len(saved)
    with ScriptedServer(judge("pixel")) as server:
        cli("critique", "--input", str(src), "--output", str(out), "--base-url", server.base_url, "--model", "judge")
        asked = server.chat_request_count
    assert asked == 9 - len(saved)
    with ScriptedServer(judge("pixel")) as server:
        cli("critique", "--input", str(src), "--output", str(tmp_path / "ref.jsonl"), "--base-url", server.base_url,
            "--model", "judge")
    assert_same(rows(out), rows(tmp_path / "ref.jsonl"))


def _wait_for_new_pid(rm: Any, old: list[int], deadline_s: float = 120.0) -> list[int]:
    deadline = time.monotonic() + deadline_s
    while True:
        pids = rm.pool.worker_pids()  # blocks while a worker is being restarted
        if pids != old:
            return pids
        if time.monotonic() > deadline:
            raise TimeoutError(f"Ray did not replace the killed worker (pids still {pids})")
        time.sleep(0.05)


def test_a_worker_killed_mid_run_is_replaced_and_no_item_is_lost_or_duplicated(data, ray_address):
    items = [{"id": f"k{i}", "prompt": f"square {i}", "image": str(data / "img" / f"c{i}.png")} for i in range(10)]
    with ScriptedServer(judge("pixel")) as server:
        local = reward_model(opts(server)).critique_batch(items)
    gate = HoldAfter(judge("pixel"), n=3)  # the Ray run gets 3 answers, then waits for the kill
    with ScriptedServer(gate) as server:
        rm = reward_model(opts(server), ExecutorOptions("ray", address=ray_address, workers=2))
        pids = rm.pool.worker_pids()
        seen: list[str] = []
        box: dict[str, Any] = {}

        def run() -> None:
            box["results"] = rm.critique_batch(items, on_result=lambda _i, r: seen.append(r.id))

        worker = threading.Thread(target=run)
        worker.start()
        try:
            gate.wait_until_holding(timeout=120)
            os.kill(pids[0], signal.SIGKILL)
            new = _wait_for_new_pid(rm, pids)
        finally:
            gate.release()
            worker.join(120)
        rm.close()
    assert new[0] != pids[0] and new[1] == pids[1]
    results = box["results"]
    assert sorted(seen) == sorted(r["id"] for r in items)  # each item reported exactly once
    assert all(r.ok for r in results)
    assert_same([untimed(r.to_json()) for r in results], [untimed(r.to_json()) for r in local])


# -- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "message"), [
    (["--ray-workers", "0"], "--ray-workers"),
    (["--ray-num-gpus", "nan"], "--ray-num-gpus"),
    (["--executor", "spark"], "--executor"),
    (["--ray-address", "127.0.0.1:1"], "need --executor ray"),
])
def test_bad_executor_options_are_usage_errors(flags, message, data, tmp_path):
    result = CliRunner().invoke(app, ["critique", "--input", str(data / "items.jsonl"), "--output",
                                      str(tmp_path / "o.jsonl"), "--base-url", "http://127.0.0.1:9/v1",
                                      "--model", "judge", *flags])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "o.jsonl").exists()


def test_gpu_workers_on_a_cluster_without_gpus_fail_with_the_reason(data, ray_address, tmp_path):
    result = CliRunner().invoke(app, ["critique", "--input", str(data / "items.jsonl"), "--output",
                                      str(tmp_path / "o.jsonl"), "--base-url", "http://127.0.0.1:9/v1",
                                      "--model", "judge", "--executor", "ray", "--ray-address", ray_address,
                                      "--ray-num-gpus", "1"])
    assert result.exit_code == 4
    assert "the Ray cluster has 0 GPUs" in result.output


def test_a_judge_that_cannot_be_built_on_a_worker_is_an_error_naming_why(ray_address, tmp_path):
    from rationalrewards.backends.base import BackendError

    missing = tmp_path / "no-such-templates"
    with pytest.raises(BackendError, match=r"could not build its judge: .*no template folder"):
        reward_model({"base_url": ["http://127.0.0.1:9/v1"], "model": "judge", "templates": str(missing)},
                     ExecutorOptions("ray", address=ray_address, workers=2))


def test_without_an_address_the_command_starts_and_stops_its_own_ray_instance(data, tmp_path):
    out = tmp_path / "own.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with ScriptedServer(judge("pixel")) as server:
        done = subprocess.run(
            [sys.executable, "-m", "rationalrewards.cli.main", "critique", "--input", str(data / "items.jsonl"),
             "--output", str(out), "--base-url", server.base_url, "--model", "judge", "--executor", "ray",
             "--ray-workers", "2"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(rows(out)) == 9 and all(r["ok"] for r in rows(out))


def test_an_in_process_judge_runs_inside_the_ray_worker(data, ray_address, tmp_path):
    """`--model FOLDER` without a URL: each actor loads the checkpoint with transformers (on a GPU
    node with --ray-num-gpus; here the tiny random Qwen3-VL on CPU) and writes what a local run writes."""
    from rationalrewards.testing import build_tiny_qwen3vl_cached

    model = build_tiny_qwen3vl_cached()
    common = ["--model", str(model), "--device", "cpu", "--dtype", "float32", "--max-tokens", "8",
              "--temperature", "0"]
    for name, flags in (("local", []), ("ray", ["--executor", "ray", "--ray-address", ray_address,
                                                "--ray-workers", "1"])):
        result = CliRunner().invoke(app, ["critique", "--input", str(data / "items.jsonl"), "--output",
                                          str(tmp_path / f"{name}.jsonl"), *common, *flags])
        assert result.exit_code == 0, result.output
    local = rows(tmp_path / "local.jsonl")
    assert len(local) == 9 and all(r["raw"] for r in local)  # a random model: text, but no critique
    assert_same(rows(tmp_path / "ray.jsonl"), local)
