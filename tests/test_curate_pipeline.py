"""Curation end to end against a scripted judge whose scores are a function of each image's colour.

The judge gives Text Faithfulness = 1 + 3 * red and Physical Quality = 1 + 3 * green (channel
means in [0, 1]), so every expected score, reward and reason below follows from the colours.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageStat
from typer.testing import CliRunner

from rationalrewards import RewardModel
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.curate import Columns, JudgeRequired, Thresholds, curate, load_curated, open_items
from rationalrewards.io import InputFileError
from rationalrewards.testing.scripted_server import (
    RecordedRequest,
    Reply,
    ScriptedServer,
    critique_text,
    detect_task,
)

YELLOW, RED, GREEN, GREY, BLUE = (255, 255, 0), (255, 0, 0), (0, 255, 0), (128, 128, 128), (0, 0, 255)


def colour_scores(png: bytes) -> dict[str, float | None]:
    r, g, _ = ImageStat.Stat(Image.open(io.BytesIO(png)).convert("RGB")).mean
    return {"text_faithfulness": round(1 + 3 * r / 255, 3), "physical_quality": round(1 + 3 * g / 255, 3),
            "image_faithfulness": 3.0, "text_rendering": None}


def colour_judge(req: RecordedRequest) -> str:
    judged = req.images()[-1][1]  # the generated / edited image comes last
    return critique_text(detect_task(req), colour_scores(judged))


def png(colour, size=(24, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def write_items(folder: Path, rows: list[dict]) -> Path:
    path = folder / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    folder = tmp_path / "data"
    (folder / "img").mkdir(parents=True)
    for name, colour in {"yellow": YELLOW, "red": RED, "green": GREEN, "grey": GREY, "blue": BLUE}.items():
        (folder / "img" / f"{name}.png").write_bytes(png(colour))
    return folder


@pytest.fixture
def items(data) -> Path:
    return write_items(data, [
        {"id": "yellow", "prompt": "a yellow square", "image": "img/yellow.png", "category": "shapes"},
        {"id": "red", "prompt": "a red square", "image": "img/red.png", "category": "shapes"},
        {"id": "green", "prompt": "a green square", "image": "img/green.png", "category": "shapes"},
        {"id": "grey", "prompt": "a grey square", "image": "img/grey.png", "category": "shapes"},
    ])


def judge_model(server: ScriptedServer, **kw) -> RewardModel:
    kw.setdefault("max_retries", 0)
    return RewardModel(OpenAIBackend(server.base_url, "judge", backoff_base=0.01, backoff_max=0.02, **kw))


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def ids(path: Path) -> list[str]:
    return [r["id"] for r in read(path)]


# -- splitting ------------------------------------------------------------------------------------


def test_items_are_split_by_reward_and_dimension_thresholds_with_exact_reasons(items, tmp_path):
    out = tmp_path / "out"
    th = Thresholds(min_reward=0.5, min_scores={"physical_quality": 2.5})
    with ScriptedServer(colour_judge) as server:
        result = curate(items, out, reward_model=judge_model(server), thresholds=th)
        assert server.chat_request_count == 4
    # yellow: TF 4, PQ 4 -> reward 1; green: TF 1, PQ 4 -> 0.5 (kept: >= is inclusive);
    # grey: TF = PQ = 2.506 -> 0.502; red: TF 4, PQ 1 -> 0.5 but PQ below 2.5.
    assert ids(out / "kept.jsonl") == ["yellow", "green", "grey"]
    assert ids(out / "rejected.jsonl") == ["red"]
    (red,) = read(out / "rejected.jsonl")
    assert red["reason"] == "physical_quality 1 < 2.5"
    assert red["kept"] is False
    assert red["reward"] == pytest.approx(0.5)
    assert red["scores"]["text_faithfulness"] == 4.0
    assert {"check": "physical_quality", "value": 1.0, "threshold": 2.5, "passed": False} in red["checks"]
    green = read(out / "kept.jsonl")[1]
    assert green["reason"] == "passed: reward 0.5 >= 0.5; physical_quality 4 >= 2.5"
    # Every row carries its whole critique, the input's extra columns, and a path relative to out/.
    assert green["critique"]["ok"] is True
    assert green["critique"]["justifications"]["physical_quality"]
    assert "# Detailed Judgement" in green["critique"]["raw"]
    assert green["category"] == "shapes"
    assert (out / green["image"]).resolve() == (items.parent / "img/green.png").resolve()
    assert (result.n, result.n_kept, result.n_rejected, result.n_failed) == (4, 3, 1, 0)


def test_failed_critiques_are_rejected_with_their_reason_never_kept(data, tmp_path):
    path = write_items(data, [
        {"id": "ok", "prompt": "a yellow square", "image": "img/yellow.png"},
        {"id": "gone", "prompt": "a square", "image": "img/missing.png"},
        {"id": "noise", "prompt": "a blue square", "image": "img/blue.png"},
        {"id": "down", "prompt": "a red square", "image": "img/red.png"},
        {"id": "empty", "prompt": "", "image": "img/grey.png"},
    ])

    def judge(req: RecordedRequest):
        scores = colour_scores(req.images()[-1][1])
        if scores["physical_quality"] == 1.0 and scores["text_faithfulness"] == 1.0:  # blue
            return "I cannot judge this image."
        if scores["text_faithfulness"] == 4.0 and scores["physical_quality"] == 1.0:  # red
            return Reply(status=503)
        return critique_text(detect_task(req), scores)

    out = tmp_path / "out"
    with ScriptedServer(judge) as server:
        result = curate(path, out, reward_model=judge_model(server))  # no thresholds at all
    assert ids(out / "kept.jsonl") == ["ok"]
    rejected = {r["id"]: r for r in read(out / "rejected.jsonl")}
    assert set(rejected) == {"gone", "noise", "down", "empty"}
    assert rejected["gone"]["reason"].startswith("critique failed (input): image file not found")
    assert rejected["noise"]["reason"].startswith("critique failed (parse):")
    assert rejected["down"]["reason"].startswith("critique failed (backend):")
    assert rejected["empty"]["reason"] == f"critique failed (input): {path}:5: empty 'prompt'"
    assert all(r["reward"] is None for r in rejected.values())
    assert result.summary["stats"]["failures_by_kind"] == {"input": 2, "parse": 1, "backend": 1}
    assert result.summary["stats"]["rejections_by_check"] == {"critique": 4}


# -- resuming and re-splitting --------------------------------------------------------------------


def test_a_rerun_retries_only_failed_items_and_a_torn_line_costs_nothing(items, tmp_path):
    out = tmp_path / "out"
    calls = {"n": 0}

    def flaky(req: RecordedRequest):
        calls["n"] += 1
        scores = colour_scores(req.images()[-1][1])
        if scores["text_faithfulness"] == 1.0:  # green fails the first time
            return "garbled"
        return critique_text(detect_task(req), scores)

    with ScriptedServer(flaky) as server:
        first = curate(items, out, reward_model=judge_model(server))
    assert first.n_failed == 1 and calls["n"] == 4
    # A kill while writing leaves a torn last line; it must be ignored, not crash the resume.
    with (out / "critiques.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"id": "grey", "ok": tr')
    with ScriptedServer(colour_judge) as server:
        second = curate(items, out, reward_model=judge_model(server))
        judged = server.chat_request_count
    assert judged == 1  # only green
    assert second.summary["run"] == {"critiqued": 1, "cached": 3, "stale": 0, "unjudgeable": 0,
                                     "failed_not_retried": 0}
    assert ids(out / "kept.jsonl") == ["yellow", "red", "green", "grey"]
    # The critique store ends with exactly one line per item, in input order.
    assert ids(out / "critiques.jsonl") == ["yellow", "red", "green", "grey"]


def test_an_interrupted_run_loses_nothing_and_duplicates_nothing(items, tmp_path):
    out = tmp_path / "out"
    settled = []

    def interrupt_after_two(n):
        settled.append(n)
        if len(settled) == 2:
            raise KeyboardInterrupt

    with ScriptedServer(colour_judge) as server, pytest.raises(KeyboardInterrupt):
        curate(items, out, reward_model=judge_model(server), concurrency=1, on_progress=interrupt_after_two)
    assert ids(out / "critiques.jsonl") == ["yellow", "red"]
    with ScriptedServer(colour_judge) as server:
        result = curate(items, out, reward_model=judge_model(server))
        assert sorted(server.requests[i].text("user").split("User Instruction: ")[1].split("\n")[0]
                      for i in range(2)) == ["a green square", "a grey square"]
    assert result.summary["run"]["cached"] == 2 and result.summary["run"]["critiqued"] == 2
    assert ids(out / "critiques.jsonl") == ["yellow", "red", "green", "grey"]


def test_new_thresholds_resplit_from_cached_critiques_without_a_judge(items, tmp_path):
    out = tmp_path / "out"
    with ScriptedServer(colour_judge) as server:
        curate(items, out, reward_model=judge_model(server))
    assert ids(out / "rejected.jsonl") == []
    again = curate(items, out, thresholds=Thresholds(min_scores={"text_faithfulness": 3.0}))
    assert again.n_critiqued == 0
    assert ids(out / "kept.jsonl") == ["yellow", "red"]
    assert [r["reason"] for r in read(out / "rejected.jsonl")] == [
        "text_faithfulness 1 < 3", "text_faithfulness 2.506 < 3"]
    assert json.loads((out / "summary.json").read_text())["thresholds"] == {
        "min_reward": None, "min_scores": {"text_faithfulness": 3.0}}


def test_a_resplit_without_a_judge_keeps_failed_critiques_rejected_for_a_later_retry(data, tmp_path):
    path = write_items(data, [{"id": "ok", "prompt": "a yellow square", "image": "img/yellow.png"},
                              {"id": "gone", "prompt": "a square", "image": "img/missing.png"}])
    out = tmp_path / "out"
    with ScriptedServer(colour_judge) as server:
        curate(path, out, reward_model=judge_model(server))
    resplit = curate(path, out, thresholds=Thresholds(min_reward=0.9))
    assert resplit.summary["run"]["failed_not_retried"] == 1
    assert ids(out / "kept.jsonl") == ["ok"]
    (gone,) = read(out / "rejected.jsonl")
    assert gone["reason"].startswith("critique failed (input): image file not found")
    # Still on record, so a run with a judge retries it.
    (data / "img" / "missing.png").write_bytes(png(YELLOW))
    with ScriptedServer(colour_judge) as server:
        retried = curate(path, out, reward_model=judge_model(server))
        assert server.chat_request_count == 1
    assert retried.n_kept == 2


def test_a_resplit_without_a_judge_refuses_when_critiques_are_missing(items, tmp_path):
    with pytest.raises(JudgeRequired, match="4 of 4 items have no cached critique"):
        curate(items, tmp_path / "out")


def test_a_changed_prompt_or_image_is_critiqued_again(data, items, tmp_path):
    out = tmp_path / "out"
    with ScriptedServer(colour_judge) as server:
        curate(items, out, reward_model=judge_model(server))
    rows = [json.loads(line) for line in items.read_text().splitlines()]
    rows[0]["prompt"] = "a yellow circle"
    rows[1]["image"] = "img/blue.png"
    write_items(data, rows)
    with ScriptedServer(colour_judge) as server:
        result = curate(items, out, reward_model=judge_model(server))
        assert server.chat_request_count == 2
    assert result.summary["run"]["stale"] == 2
    red_row = next(r for r in read(out / "kept.jsonl") if r["id"] == "red")
    assert red_row["scores"]["text_faithfulness"] == 1.0  # the blue image's score, not the stale one


# -- outputs ----------------------------------------------------------------------------------------


def test_outputs_load_with_datasets_even_mixing_t2i_edit_and_failures(data, tmp_path):
    path = write_items(data, [
        {"id": "t2i", "prompt": "a yellow square", "image": "img/yellow.png"},
        {"id": "edit", "prompt": "make it red", "image": "img/red.png", "source": "img/grey.png"},
        {"id": "two-sources", "prompt": "combine", "image": "img/green.png", "source": ["img/grey.png", "img/red.png"]},
        {"id": "gone", "prompt": "a square", "image": "img/missing.png"},
    ])
    out = tmp_path / "out"
    with ScriptedServer(colour_judge) as server:
        curate(path, out, reward_model=judge_model(server), thresholds=Thresholds(min_reward=0.9))
    cache = tmp_path / "hf-cache"
    kept = load_curated(out, "kept", cache_dir=cache)
    rejected = load_curated(out, "rejected", decode_images=True, cache_dir=cache)
    assert kept["id"] == ["t2i"]
    assert sorted(rejected["id"]) == ["edit", "gone", "two-sources"]
    by_id = {r["id"]: r for r in rejected}
    assert by_id["edit"]["task"] == "edit" and by_id["edit"]["scores"]["image_faithfulness"] == 3.0
    assert by_id["edit"]["image"].size == (24, 24)  # decoded from the path written relative to out/
    assert by_id["two-sources"]["source"] == ["../data/img/grey.png", "../data/img/red.png"]
    assert by_id["gone"]["critique"]["error_kind"] == "input"
    assert Path(kept["image"][0]).is_absolute()


def test_summary_plots_and_report_describe_the_run(items, tmp_path):
    out = tmp_path / "out"
    with ScriptedServer(colour_judge) as server:
        curate(items, out, reward_model=judge_model(server), thresholds=Thresholds(min_reward=0.6),
               report_examples=2)
    summary = json.loads((out / "summary.json").read_text())
    stats = summary["stats"]
    assert (stats["n"], stats["n_kept"], stats["n_rejected"]) == (4, 1, 3)
    assert stats["rejections_by_check"] == {"min_reward": 3}
    pq = stats["dimensions"]["physical_quality"]
    assert pq["n"] == 4 and pq["min"] == 1.0 and pq["max"] == 4.0
    assert sum(pq["histogram"]["kept"]) == 1 and sum(pq["histogram"]["rejected"]) == 3
    tr = stats["dimensions"]["text_rendering"]
    assert (tr["n"], tr["n_na"]) == (0, 4)  # the judge wrote N/A: no text was asked for
    assert set(summary["files"]["plots"]) == {"reward", "text_faithfulness", "physical_quality"}
    for rel in summary["files"]["plots"].values():
        with Image.open(out / rel) as im:
            assert im.format == "PNG" and im.size == (720, 400)
    page = (out / "report.html").read_text()
    # The two lowest rewards (red and green at 0.5, ties broken by id), with embedded thumbnails.
    assert page.count('<div class="ex">') == 2
    assert "<b>green</b>" in page and "<b>red</b>" in page and "<b>yellow</b>" not in page
    assert page.count("data:image/jpeg;base64,") == 2
    assert page.count("data:image/png;base64,") == 3


# -- input formats -----------------------------------------------------------------------------------


def test_parquet_with_image_bytes_exports_each_image_once(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "uid": ["a", "b"],
        "caption": ["a yellow square", "a red square"],
        "img": [{"bytes": png(YELLOW), "path": None}, {"bytes": png(RED), "path": None}],
        "score_hint": [1, 2],
    })
    path = tmp_path / "items.parquet"
    pq.write_table(table, path)
    out = tmp_path / "out"
    cols = Columns(id="uid", prompt="caption", image="img")
    with ScriptedServer(colour_judge) as server:
        curate(path, out, reward_model=judge_model(server), columns=cols, thresholds=Thresholds(min_reward=0.9))
    (kept,) = read(out / "kept.jsonl")
    assert kept["id"] == "a" and kept["score_hint"] == 1
    assert kept["image"].startswith("images/a-") and kept["image"].endswith(".png")
    assert (out / kept["image"]).read_bytes() == png(YELLOW)
    # A re-split rewrites the rows but finds the exported image already there.
    curate(path, out, columns=cols)
    assert len(list((out / "images").iterdir())) == 2


def test_a_missing_column_is_named_with_the_ones_that_exist(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({"caption": ["x"], "image": ["a.png"]}), path)
    with pytest.raises(InputFileError, match="no column 'prompt'; columns are caption, image"):
        open_items(path)


def test_a_saved_datasets_folder_is_read_lazily_with_undecoded_images(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {"prompt": ["a green square", "a grey square"], "image": [Image.open(io.BytesIO(png(GREEN))),
                                                                   Image.open(io.BytesIO(png(GREY)))]},
        features=datasets.Features({"prompt": datasets.Value("string"), "image": datasets.Image()}),
    )
    folder = tmp_path / "hf"
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(folder))
    files_before = sorted(folder.rglob("*"))
    source = open_items(folder)
    assert source.ids() == ["row-0", "row-1"]  # the train split by default
    first = next(iter(source))
    assert isinstance(first.image, dict) and first.image["bytes"]  # never decoded to PIL
    out = tmp_path / "out"
    with ScriptedServer(colour_judge) as server:
        result = curate(open_items(folder, split="test"), out, reward_model=judge_model(server))
    assert result.n == 1 and result.n_kept == 1
    assert sorted(folder.rglob("*")) == files_before  # the input folder is only read


def test_an_image_folder_takes_prompts_from_a_csv_and_rejects_images_without_one(data, tmp_path):
    folder = data / "img"
    (folder / "prompts.csv").write_text("file_name,prompt\nyellow.png,a yellow square\nred.png,a red square\n"
                                        "absent.png,a lost square\n", encoding="utf-8")
    out = tmp_path / "out"
    with ScriptedServer(colour_judge) as server:
        curate(folder, out, reward_model=judge_model(server))
        assert server.chat_request_count == 2  # the absent file fails on load, before any request
    assert ids(out / "kept.jsonl") == ["red.png", "yellow.png"]
    rejected = {r["id"]: r["reason"] for r in read(out / "rejected.jsonl")}
    assert rejected["blue.png"].endswith("no prompt for this image in " + str((folder / "prompts.csv").resolve()))
    assert rejected["absent.png"].startswith("critique failed (input): image file not found")


@pytest.mark.parametrize("kind", ["txt", "jsonl", "captions"])
def test_an_image_folder_accepts_txt_jsonl_prompts_and_caption_files(tmp_path, kind):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(png(YELLOW))
    if kind == "txt":
        prompts = tmp_path / "p.txt"
        prompts.write_text("a.png\ta yellow square\n", encoding="utf-8")
    elif kind == "jsonl":
        prompts = tmp_path / "p.jsonl"
        prompts.write_text(json.dumps({"file": "a.png", "caption": "a yellow square", "id": "sq"}) + "\n")
    else:
        prompts = None
        (folder / "a.txt").write_text("a yellow square\n", encoding="utf-8")
    (item,) = list(open_items(folder, prompts=prompts))
    assert item.prompt == "a yellow square" and item.problem is None
    assert item.id == ("sq" if kind == "jsonl" else "a.png")


def test_an_output_folder_inside_the_image_folder_is_not_read_back_as_input(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(png(YELLOW))
    (folder / "a.txt").write_text("a yellow square")
    with ScriptedServer(colour_judge) as server:
        curate(folder, folder / "curated", reward_model=judge_model(server))
        again = curate(folder, folder / "curated", reward_model=judge_model(server))
    assert any((folder / "curated" / "plots").iterdir())
    assert again.n == 1 and again.n_critiqued == 0


def test_an_image_folder_without_prompts_is_a_clear_error(tmp_path):
    (tmp_path / "a.png").write_bytes(png(YELLOW))
    with pytest.raises(InputFileError, match="needs a prompts file"):
        open_items(tmp_path)


def test_a_repeated_jsonl_id_is_rejected_and_the_first_row_curated(data, tmp_path):
    path = write_items(data, [{"id": "x", "prompt": "a red square", "image": "img/red.png"},
                              {"id": "x", "prompt": "q", "image": "img/red.png"}])
    with ScriptedServer(colour_judge) as server:
        curate(path, tmp_path / "out", reward_model=judge_model(server))
    (dup,) = read(tmp_path / "out" / "rejected.jsonl")
    assert dup["id"] == "line-2"
    assert dup["reason"] == f"critique failed (input): {path}:2: duplicate id 'x' (first on line 1)"


# -- command line -------------------------------------------------------------------------------------


def test_cli_curates_resplits_without_a_backend_and_reports_bad_options(items, tmp_path):
    from rationalrewards.cli.main import app

    runner = CliRunner()
    out = tmp_path / "out"
    with ScriptedServer(colour_judge) as server:
        res = runner.invoke(app, ["curate", "--input", str(items), "--out", str(out), "--min-reward", "0.6",
                                  "--min", "pq=2", "--base-url", server.base_url, "--model", "judge", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["stats"]["n_kept"] == 1 and summary["run"]["critiqued"] == 4
    res = runner.invoke(app, ["curate", "--input", str(items), "--out", str(out), "--min", "tf=3.5"])
    assert res.exit_code == 0, res.output
    assert ids(out / "kept.jsonl") == ["yellow", "red"]
    res = runner.invoke(app, ["curate", "--input", str(items), "--out", str(out), "--min", "sharpness=3"])
    assert res.exit_code == 2 and "unknown dimension 'sharpness'" in res.output
    res = runner.invoke(app, ["curate", "--input", str(tmp_path / "nope.jsonl"), "--out", str(out)])
    assert res.exit_code == 2 and "input not found" in res.output
    res = runner.invoke(app, ["curate", "--input", str(items), "--out", str(tmp_path / "fresh")])
    assert res.exit_code == 2 and "no cached critique" in res.output
