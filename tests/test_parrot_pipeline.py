"""PARROT end to end against a scripted teacher: what is kept, what is rejected and why, what the
student sees, both export formats, and identical results after interruptions."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from holdgate import HoldAfter, wait_for_lines
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.parrot.config import resolve_config
from rationalrewards.parrot.pipeline import Parrot
from rationalrewards.parrot.prompts import TeacherTemplates
from rationalrewards.testing.judges import scripted_teacher
from rationalrewards.testing.scripted_server import Reply, ScriptedServer

COLOURS = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple", "cyan", "pink", "brown", "gray"]
# (id, behaviour word, label); the behaviour word opens the request (see parrot/scripted.py).
PAIRS = [
    ("ok1", "ok", "A"),
    ("ok2", "ok", "B"),
    ("contra", "contra", "A"),
    ("leak", "leak", "B"),
    ("garbled", "garbled", "A"),
    ("fooled", "fooled", "B"),
    ("mixed", "mixed", "A"),
    ("vague", "vague", "B"),
    ("verdict", "verdict", "A"),
]
STUDENT_FORBIDDEN = re.compile(r"human preferred|ground truth|\blabel|annotator|preferred by|judged .* better",
                               re.IGNORECASE)


def teacher_backend(server: ScriptedServer, **kw) -> OpenAIBackend:
    kw.setdefault("max_retries", 0)
    return OpenAIBackend(server.base_url, "teacher", concurrency=8, backoff_base=0.01, backoff_max=0.02, **kw)


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    """Nine usable t2i pairs, one edit pair, one tie and three bad rows."""
    root = tmp_path_factory.mktemp("pairs")
    (root / "img").mkdir()
    for c in COLOURS:
        Image.new("RGB", (32, 32), c).save(root / "img" / f"{c}.png")
    rows = []
    for i, (pid, tag, label) in enumerate(PAIRS):
        rows.append({"id": pid, "prompt": f"{tag} a {COLOURS[i]} kite over a field", "image_a": f"img/{COLOURS[i]}.png",
                     "image_b": f"img/{COLOURS[i + 1]}.png", "label": label})
    rows.append({"id": "okedit", "task": "edit", "prompt": "ok make the ball blue", "source": "img/red.png",
                 "image_a": "img/blue.png", "image_b": "img/green.png", "label": "A"})
    rows.append({"id": "tie1", "prompt": "ok two equal kites", "image_a": "img/red.png", "image_b": "img/blue.png",
                 "label": "tie"})
    rows.append({"id": "nofile", "prompt": "ok a kite", "image_a": "img/missing.png", "image_b": "img/red.png",
                 "label": "A"})
    rows.append({"id": "badlabel", "prompt": "ok a kite", "image_a": "img/red.png", "image_b": "img/blue.png",
                 "label": "C"})
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, "{not json")
    path = root / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_cfg(pairs: Path, out: Path, **sections):
    overrides = {"pairs": str(pairs), "out": str(out), "sft": {"val_fraction": 0.3}}
    for key, value in sections.items():
        overrides.setdefault(key, {}).update(value) if isinstance(value, dict) else overrides.update({key: value})
    return resolve_config(overrides=overrides)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def snapshot(out: Path) -> dict[str, str]:
    """Every output file's content (stats without the timing block and the folder path)."""
    files = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if p.is_dir() or rel.startswith("work/") or p.name.startswith(".") or rel in ("config.json", "summary.md"):
            continue
        if rel == "stats.json":
            stats = json.loads(p.read_text())
            stats.pop("last_run")
            stats.pop("out")
            files[rel] = json.dumps(stats, sort_keys=True)
        elif p.suffix in (".png", ".jpg"):
            files[rel] = "image"
        else:
            files[rel] = p.read_text()
    return files


@pytest.fixture(scope="module")
def reference(pairs_file, tmp_path_factory):
    """One uninterrupted run with the default options (balanced orders, 2 samples, pointwise on)."""
    out = tmp_path_factory.mktemp("ref")
    with ScriptedServer(scripted_teacher()) as server:
        stats = Parrot(make_cfg(pairs_file, out), backend=teacher_backend(server)).run()
        requests = list(server.requests)
    return out, stats, requests


def test_input_rows_are_counted_bad_ones_reported_with_their_id_and_ties_kept_aside(reference):
    out, stats, _ = reference
    assert stats["pairs"] == {
        "in": 14, "ok": 11, "bad": 3, "bad_reasons": {"image": 1, "json": 1, "label": 1}, "ties": 1,
        "ties_used": False, "used": 10, "labels": {"A": 6, "B": 4, "tie": 1}, "by_task": {"edit": 1, "t2i": 10},
    }
    bad = {b["id"]: b for b in read_jsonl(out / "bad_pairs.jsonl")}
    assert set(bad) == {"nofile", "badlabel", "line-4"}
    assert "missing.png" in bad["nofile"]["error"] and "'C'" in bad["badlabel"]["error"]
    assert "tie1" not in {r["id"] for r in read_jsonl(out / "anchored.jsonl")}


def test_exact_kept_and_rejected_counts_with_reasons(reference):
    out, stats, _ = reference
    f = stats["filter"]
    assert f["pairwise"]["kept"] == 5 and f["pairwise"]["passed_not_selected"] == 4
    assert f["pairwise"]["first_reason"] == {"inconsistent": 3, "leak": 2, "repredict_unparseable": 2,
                                             "repredict_wrong": 2, "unparseable": 2}
    assert f["pointwise"]["kept"] == 7 and f["pointwise"]["passed_not_selected"] == 6
    assert f["pointwise"]["first_reason"] == {"inconsistent": 3, "leak": 2, "unparseable": 2}
    assert f["pending"] == 0 and f["repredict_calls"] == 13 and stats["anchor"]["calls"] == 60
    rows = read_jsonl(out / "filtered.jsonl")
    reasons = {(r["id"], r["kind"], r["sample"]): r["reason"] for r in rows}
    assert reasons[("contra", "pairwise", 0)] == "inconsistent"
    assert reasons[("leak", "pairwise", 1)] == "leak"
    assert reasons[("garbled", "pointwise", 0)] == "unparseable"
    assert reasons[("fooled", "pairwise", 0)] == "repredict_wrong"
    assert reasons[("vague", "pairwise", 1)] == "repredict_unparseable"
    # mixed: sample 0 contradicts the label, sample 1 is kept.
    assert reasons[("mixed", "pairwise", 0)] == "inconsistent" and reasons[("mixed", "pairwise", 1)] is None
    # verdict: no scores in the re-prediction, its Final verdict line decides.
    verdict = next(r for r in rows if r["id"] == "verdict" and r["kept"] and r["kind"] == "pairwise")
    assert verdict["repredict"]["orders"][0]["final_verdict"] == verdict["shown_label"]
    assert verdict["repredict"]["orders"][0]["verdict_scores"] is None
    # Every row carries the pair id; every rejected one a reason.
    assert all(r["id"] and (r["kept"] or r["reason"]) for r in rows)
    leak = next(r for r in rows if r["id"] == "leak" and r["kind"] == "pairwise")
    assert any("human preferred" in hit.lower() for hit in leak["leak"])


def test_teacher_sees_the_label_when_anchoring_and_never_when_re_predicting(reference):
    _, _, requests = reference
    phrases = TeacherTemplates.load().phrases
    stated = [phrases["pairwise_preferred"].format(preferred=f"Image {x}", other="") for x in "AB"]
    anchored = [r for r in requests if "<notes>" not in r.text("user")]
    repredicts = [r for r in requests if "<notes>" in r.text("user")]
    assert len(anchored) == 60 and len(repredicts) == 13
    pairwise = [r for r in anchored if "Image A" in r.text("user")]
    assert len(pairwise) == 20
    assert all(sum(s in r.text("user") for s in stated) == 1 for r in pairwise)
    for r in repredicts:
        text = r.text("user")
        notes = text.split("<notes>")[1].split("</notes>")[0]
        assert "judged" not in text and "preferred" not in text.lower()
        assert "## Score" not in notes and "## Winner" not in notes  # scores removed by default
        assert "is stronger" in notes  # ...but the prose that carries the preference stays
    # t2i pairwise shows two images, the edit pair its source too.
    assert sorted({r.count_images() for r in pairwise}) == [2, 3]


def test_student_prompts_carry_no_label_and_match_inference_prompts(reference):
    from rationalrewards.critique.prompts import build_messages, render_text

    out, _, _ = reference
    rows = read_jsonl(out / "sft" / "trl" / "train.jsonl") + read_jsonl(out / "sft" / "trl" / "validation.jsonl")
    assert len(rows) == 5 + 2 * 7
    for row in rows:
        prompt = "".join(p.get("text") or "" for m in row["messages"] if m["role"] != "assistant" for p in m["content"])
        assert not STUDENT_FORBIDDEN.search(prompt), prompt
        assert row["messages"][-1]["role"] == "assistant"
    # The student prompt is exactly what RewardModel sends at inference.
    pairs = {p["id"]: p for p in read_jsonl(out / "pairs.jsonl")}
    row = next(r for r in rows if r["kind"] == "pairwise" and r["task"] == "t2i")
    pair = pairs[row["pair_id"]]
    order = row["id"].split("|")[-1]
    shown = [pair["image_a"], pair["image_b"]] if order == "AB" else [pair["image_b"], pair["image_a"]]
    expected = render_text(build_messages("t2i", "pairwise", pair["prompt"], shown))[0]["content"]
    got = "".join(p["text"] if p["type"] == "text" else "<image>" for p in row["messages"][0]["content"])
    assert got == expected
    # pointwise examples: system + user + assistant, one judged image.
    pw = next(r for r in rows if r["kind"] == "pointwise" and r["task"] == "t2i")
    assert [m["role"] for m in pw["messages"]] == ["system", "user", "assistant"] and len(pw["images"]) == 1


def test_both_export_formats_split_by_pair_and_point_at_stored_images(reference):
    out, _, _ = reference
    sft = out / "sft"
    manifest = json.loads((sft / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["train"]["examples"] + counts["validation"]["examples"] == 19
    assert counts["train"]["pairwise"] + counts["validation"]["pairwise"] == 5
    trl = {s: read_jsonl(sft / "trl" / f"{s}.jsonl") for s in ("train", "validation")}
    share = {s: read_jsonl(sft / "sharegpt" / f"{s}.jsonl") for s in ("train", "validation")}
    assert {r["pair_id"] for r in trl["train"]}.isdisjoint({r["pair_id"] for r in trl["validation"]})
    assert counts["validation"]["examples"] > 0 and counts["train"]["examples"] > 0
    for split in ("train", "validation"):
        assert len(trl[split]) == len(share[split])
        for t, s in zip(trl[split], share[split], strict=True):
            text = "".join(m["content"] for m in s["messages"])
            assert text.count("<image>") == len(s["images"]) == len(t["images"])
            assert s["messages"][-1]["content"] == t["messages"][-1]["content"][0]["text"]
            for rel in s["images"]:
                img = (sft / "sharegpt" / rel).resolve()
                assert img.is_file() and img.parent.parent.name == "images"
                assert img.stem == __import__("hashlib").sha256(img.read_bytes()).hexdigest()
    info = json.loads((sft / "sharegpt" / "dataset_info.json").read_text())
    assert info["parrot_train"]["formatting"] == "sharegpt" and info["parrot_train"]["file_name"] == "train.jsonl"
    # A picture used by several pairs is stored once.
    stored = list((out / "images").rglob("*.png"))
    assert len(stored) == len({p.stem for p in stored}) == 10  # ten colours


def test_trl_export_loads_with_datasets(reference):
    from rationalrewards.parrot.sft import load_sft_dataset

    out, _, _ = reference
    ds = load_sft_dataset(out / "sft", "train")
    row = ds[0]
    assert row["images"][0].size == (32, 32)
    assert row["messages"][-1]["role"] == "assistant"
    import datasets

    raw = datasets.load_dataset("json", data_files=str(out / "sft" / "trl" / "train.jsonl"))["train"]
    assert len(raw) == len(ds)


def test_stats_report_distributions_bias_tokens_and_cost(reference):
    out, stats, _ = reference
    dist = stats["score_distributions"]["pairwise_preferred"]["text_faithfulness"]
    assert dist["n"] == 5 and dist["mean"] == pytest.approx(3.7)
    assert stats["score_distributions"]["pairwise_other"]["text_faithfulness"]["mean"] == pytest.approx(2.2)
    assert stats["score_distributions"]["pairwise_preferred"]["text_rendering"]["na"] == 5
    pb = stats["position_bias"]
    assert pb["anchor"]["n"] == 18 and pb["repredict"]["n"] == 13
    assert stats["tokens"]["by_phase"]["anchor"]["completion_tokens"] > 0
    assert stats["tokens"]["prompt"] > stats["tokens"]["completion"] > 0
    assert stats["cost"]["estimated_usd"] is None
    assert "kept 5" in (out / "summary.md").read_text()


def test_rerun_is_a_no_op_that_contacts_no_teacher(reference, pairs_file):
    out, stats, _ = reference
    before = snapshot(out)
    cfg = make_cfg(pairs_file, out)
    cfg.teacher.base_url = []  # no teacher at all: nothing may need one
    stats2 = Parrot(cfg).run()
    assert snapshot(out) == before
    assert stats2["filter"] == stats["filter"]


@pytest.mark.parametrize("phase,after", [("ingest", 5), ("anchor", 23), ("filter", 6)])
def test_a_crash_at_any_point_then_rerun_gives_identical_outputs(reference, pairs_file, tmp_path, phase, after):
    ref_out, _, _ = reference

    class Crash(Exception):
        pass

    seen = {"n": 0}

    def hook(p: str, _n: int) -> None:
        if p == phase:
            seen["n"] += 1
            if seen["n"] >= after:
                raise Crash(f"simulated crash in {p}")

    out = tmp_path / "run"
    with ScriptedServer(scripted_teacher()) as server:
        with pytest.raises(Crash):
            Parrot(make_cfg(pairs_file, out), backend=teacher_backend(server), hook=hook).run()
        Parrot(make_cfg(pairs_file, out), backend=teacher_backend(server)).run()
        total = server.chat_request_count
    assert snapshot(out) == snapshot(ref_out)
    # Nothing finished before the crash was asked for again.
    assert total <= 60 + 13 + 8


def test_failed_teacher_calls_are_retried_on_rerun_not_marked_done(pairs_file, reference, tmp_path):
    ref_out, _, _ = reference
    out = tmp_path / "flaky"
    faults = [Reply(status=500)] * 7 + [Reply(drop_connection=True)] * 2
    with ScriptedServer(scripted_teacher(), faults=faults) as server:
        stats = Parrot(make_cfg(pairs_file, out), backend=teacher_backend(server)).run()
        assert stats["anchor"]["failed_pending_retry"] == 9
        assert stats["filter"]["pending"] > 0
        failed = [r for r in read_jsonl(out / "anchored.jsonl") if not r["generated"]]
        assert len(failed) == 9 and all(r["reason"] == "teacher_error" and r["error"] for r in failed)
        stats = Parrot(make_cfg(pairs_file, out), backend=teacher_backend(server)).run()
    assert stats["anchor"]["failed_pending_retry"] == 0 and stats["filter"]["pending"] == 0
    assert snapshot(out) == snapshot(ref_out)


def test_more_samples_later_only_generates_the_new_ones(pairs_file, tmp_path):
    out = tmp_path / "grow"
    with ScriptedServer(scripted_teacher()) as server:
        Parrot(make_cfg(pairs_file, out, anchor={"samples": 1, "pointwise": False}),
               backend=teacher_backend(server)).run()
        n1 = server.chat_request_count
        stats = Parrot(make_cfg(pairs_file, out, anchor={"samples": 2, "pointwise": False}),
                       backend=teacher_backend(server)).run()
        n2 = server.chat_request_count - n1
    assert n1 == 10 + 6  # 10 anchored, 6 re-predictions (ok1 ok2 okedit fooled vague verdict)
    assert n2 == 10 + 7  # only sample 1: 10 anchored + re-predictions (mixed sample 1 passes now)
    assert stats["filter"]["pairwise"]["kept"] == 5


def test_both_orders_and_two_order_re_prediction_catch_a_position_biased_teacher(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for c in ("red", "blue"):
        Image.new("RGB", (16, 16), c).save(root / f"{c}.png")
    rows = [{"id": "s", "prompt": "sided a red square", "image_a": "red.png", "image_b": "blue.png", "label": "A"},
            {"id": "o", "prompt": "ok a red square", "image_a": "red.png", "image_b": "blue.png", "label": "A"}]
    (root / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ScriptedServer(scripted_teacher()) as server:
        stats = Parrot(make_cfg(root / "p.jsonl", tmp_path / "out",
                                anchor={"samples": 1, "orders": "both", "pointwise": False},
                                filter={"repredict_both_orders": True, "select": "all"}),
                       backend=teacher_backend(server)).run()
    f = stats["filter"]["pairwise"]
    assert f["rationales"] == 4 and f["kept"] == 2
    assert f["first_reason"] == {"repredict_order_disagreement": 2}
    assert stats["position_bias"]["repredict"]["order_disagreement_rate"] == 0.5
    assert stats["position_bias"]["anchor"]["shown_label_A_rate"] == 0.5


def test_scores_can_be_kept_for_re_prediction_and_margins_tightened(pairs_file, tmp_path):
    out = tmp_path / "keep"
    with ScriptedServer(scripted_teacher()) as server:
        stats = Parrot(make_cfg(pairs_file, out, anchor={"samples": 1, "pointwise": False},
                                filter={"keep_scores": True, "margin": 10.0}),
                       backend=teacher_backend(server)).run()
    # Sum gap of the scripted teacher is 1.5 + 0.9 (t2i) or + 0.9 (edit): below 10 -> low_margin.
    assert stats["filter"]["pairwise"]["first_reason"].get("low_margin") == 7
    assert stats["filter"]["repredict_calls"] == 0


def test_pointwise_re_prediction_is_optional(pairs_file, tmp_path):
    with ScriptedServer(scripted_teacher()) as server:
        stats = Parrot(make_cfg(pairs_file, tmp_path / "pw", anchor={"samples": 1},
                                filter={"repredict_pointwise": True}), backend=teacher_backend(server)).run()
        notes = [r.text("user") for r in server.requests if "Notes on Image A" in r.text("user")]
    assert notes and all("## Score" not in n.split("<notes>")[1] for n in notes)
    # fooled and vague now also fail their pointwise units.
    assert stats["filter"]["pointwise"]["first_reason"]["repredict_wrong"] == 1
    assert stats["filter"]["pointwise"]["first_reason"]["repredict_unparseable"] == 1


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "rationalrewards.cli.main", "parrot", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw)


def test_cli_killed_with_sigkill_mid_run_resumes_to_identical_outputs(pairs_file, reference, tmp_path):
    ref_out, _, _ = reference
    out = tmp_path / "killed"
    args = ["run", "--pairs", str(pairs_file), "--out", str(out), "--val-fraction", "0.3",
            "--concurrency", "3", "--max-retries", "0"]
    gate = HoldAfter(scripted_teacher(), n=24)  # requests 25+ wait: the kill lands inside phase 1
    with ScriptedServer(gate) as server:
        proc = _cli(*args, "--teacher-base-url", server.base_url, "--teacher-model", "teacher")
        anchored = out / "anchored.jsonl"
        try:
            gate.wait_until_holding()
            wait_for_lines(anchored, 12)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        gate.release()
        assert proc.returncode == -signal.SIGKILL
        assert not (out / "filtered.jsonl").exists()
        # The rerun finds the teacher settings in DIR/config.json: no flags needed but the folder.
        done = _cli("run", "--out", str(out))
        stdout, stderr = done.communicate(timeout=60)
    assert done.returncode == 0, stderr
    assert "already done" in stderr
    assert snapshot(out) == snapshot(ref_out)
    assert "## Phase 2" in stdout


def test_cli_reports_bad_input_and_unreachable_teacher_with_exit_codes(tmp_path, pairs_file):
    p = _cli("run", "--pairs", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"))
    _, err = p.communicate(timeout=30)
    assert p.returncode == 2 and "nope.jsonl" in err
    p = _cli("run", "--pairs", str(pairs_file), "--out", str(tmp_path / "o2"), "--base-url", "http://127.0.0.1:9/v1",
             "--model", "t", "--max-retries", "0", "--samples", "1", "--no-pointwise", "--json")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 4, err
    assert json.loads(out)["anchor"]["failed_pending_retry"] == 10
    assert "rerun" in err


def test_yaml_config_holds_the_options(tmp_path, pairs_file):
    cfg_file = tmp_path / "parrot.yaml"
    with ScriptedServer(scripted_teacher()) as server:
        cfg_file.write_text(
            f"pairs: {pairs_file}\nout: {tmp_path / 'y'}\n"
            f"teacher:\n  base_url: [{server.base_url}]\n  model: teacher\n  max_retries: 0\n"
            "anchor:\n  samples: 1\n  pointwise: false\nfilter:\n  repredict: false\n"
        )
        p = _cli("run", "--config", str(cfg_file), "--json")
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    stats = json.loads(out)
    assert stats["anchor"]["calls"] == 10 and stats["filter"]["repredict_calls"] == 0
    assert stats["filter"]["pairwise"]["first_reason"] == {"inconsistent": 2, "leak": 1, "unparseable": 1}
