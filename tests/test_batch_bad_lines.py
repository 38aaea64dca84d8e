"""One bad input line never takes a batch down (issue 12), for curate, PARROT and eval.

Each stage gets a JSONL file that starts with a UTF-8 BOM and holds, among good rows, a line that
is not UTF-8, a line that is not JSON and a row whose prompt holds a lone surrogate (valid JSON via
a ``\\ud800`` escape, but not encodable as UTF-8). The run must finish, save the good items, and
report each bad line under its id (or ``line-N``) with the reason.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from rationalrewards import RewardModel
from rationalrewards.backends.base import SamplingParams
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.curate import curate
from rationalrewards.io import InputFileError
from rationalrewards.testing.scripted_server import ScriptedServer, critique_text, detect_task

BOM = b"\xef\xbb\xbf"
NOT_UTF8 = b'{"id": "latin1", "prompt": "caf\xe9", "image": "img/a.png"}\n'  # Latin-1 e-acute
LATIN1_COLUMN = NOT_UTF8.index(b"\xe9") + 1
NOT_JSON = b'{"id": "torn", "prompt": "half a line\n'
SURROGATE_PROMPT = "a lone \ud800 surrogate"


def png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
    return buf.getvalue()


def jline(row: dict) -> bytes:
    # ensure_ascii keeps the surrogate as a \ud800 escape: the line itself is valid UTF-8.
    return (json.dumps(row) + "\n").encode("ascii")


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def fixed_judge(req) -> str:
    return critique_text(detect_task(req), {"text_faithfulness": 4.0, "physical_quality": 3.0,
                                            "image_faithfulness": 3.0, "text_rendering": None})


def judge_model(server: ScriptedServer) -> RewardModel:
    return RewardModel(OpenAIBackend(server.base_url, "judge", max_retries=0, backoff_base=0.01, backoff_max=0.02))


# -- curate ---------------------------------------------------------------------------------------


@pytest.fixture
def curate_items(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png((200, 200, 0)))
    (tmp_path / "img" / "b.png").write_bytes(png((0, 200, 0)))
    path = tmp_path / "items.jsonl"
    path.write_bytes(
        BOM + jline({"id": "first", "prompt": "a yellow square", "image": "img/a.png"})  # line 1, after the BOM
        + NOT_UTF8                                                                       # line 2
        + NOT_JSON                                                                       # line 3
        + jline({"id": "odd", "prompt": SURROGATE_PROMPT, "image": "img/b.png"})         # line 4
        + jline({"id": "last", "prompt": "a green square", "image": "img/b.png"})         # line 5
        + jline({"id": "first", "prompt": "again", "image": "img/a.png"})                # line 6: repeated id
    )
    return path


def test_curate_rejects_each_bad_line_with_its_reason_and_curates_the_rest(curate_items, tmp_path):
    out = tmp_path / "out"
    with ScriptedServer(fixed_judge) as server:
        result = curate(curate_items, out, reward_model=judge_model(server))
    kept = {r["id"]: r for r in read_rows(out / "kept.jsonl")}
    rejected = {r["id"]: r for r in read_rows(out / "rejected.jsonl")}
    # The BOM did not spoil line 1, and the good rows were judged and kept.
    assert {"first", "last"} <= set(kept)
    assert kept["first"]["prompt"] == "a yellow square"
    # Each bad line is a rejected row under line-N, its reason naming the file, the line and the fault.
    assert rejected["line-2"]["reason"] == (
        f"critique failed (input): {curate_items}:2: not UTF-8 text (byte 0xe9 at column {LATIN1_COLUMN})")
    assert rejected["line-3"]["reason"].startswith(f"critique failed (input): {curate_items}:3: not valid JSON")
    assert rejected["line-6"]["reason"] == (
        f"critique failed (input): {curate_items}:6: duplicate id 'first' (first on line 1)")
    for rid in ("line-2", "line-3", "line-6"):
        assert rejected[rid]["kept"] is False
        assert rejected[rid]["critique"]["error_kind"] == "input"
    # The judge refuses a prompt with a lone surrogate; the row is still saved (escaped on disk)
    # with that reason, and its prompt reads back unchanged.
    assert rejected["odd"]["prompt"] == SURROGATE_PROMPT
    assert rejected["odd"]["reason"].startswith("critique failed (input): prompt is not valid Unicode: lone surrogate")
    assert set(kept) | set(rejected) == {"first", "line-2", "line-3", "odd", "last", "line-6"}
    assert result.n == 6
    assert result.summary["input"]["bad_lines"] == 3
    assert result.summary["stats"]["failures_by_kind"]["input"] >= 3
    assert (out / "report.html").is_file()


def test_curate_input_without_one_usable_line_is_still_an_input_error(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_bytes(BOM + NOT_UTF8 + NOT_JSON)
    with pytest.raises(InputFileError, match=r"no usable line: .*:1: not UTF-8 text.*:2: not valid JSON"):
        curate(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_curate_prompts_file_bad_lines_are_rejected_items_of_their_own(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(png((200, 200, 0)))
    (folder / "b.png").write_bytes(png((0, 200, 0)))
    (folder / "prompts.jsonl").write_bytes(
        BOM + jline({"file_name": "a.png", "prompt": "a yellow square"})
        + b'{"file_name": "b.png", "prompt": "gr\xfcn"}\n'
    )
    out = tmp_path / "out"
    with ScriptedServer(fixed_judge) as server:
        curate(folder, out, reward_model=judge_model(server))
    assert [r["id"] for r in read_rows(out / "kept.jsonl")] == ["a.png"]
    rejected = {r["id"]: r["reason"] for r in read_rows(out / "rejected.jsonl")}
    # b.png lost its prompt line, so it has no prompt; the line itself is reported too.
    assert rejected["b.png"].startswith("critique failed (input): b.png: no prompt for this image")
    assert rejected["line-2"] == (
        f"critique failed (input): {folder / 'prompts.jsonl'}:2: not UTF-8 text (byte 0xfc at column 37)")


# -- PARROT ---------------------------------------------------------------------------------------


def test_parrot_records_each_bad_line_in_bad_pairs_and_anchors_the_rest(tmp_path):
    from rationalrewards.parrot.config import resolve_config
    from rationalrewards.parrot.pipeline import Parrot
    from rationalrewards.testing.judges import judge

    (tmp_path / "img").mkdir()
    for name, colour in {"red": (255, 0, 0), "blue": (0, 0, 255)}.items():
        (tmp_path / "img" / f"{name}.png").write_bytes(png(colour))

    def pair(pid: str, prompt: str, label: str) -> bytes:
        # The teacher's behaviour is the prompt's first word: "ok" answers well.
        return jline({"id": pid, "prompt": prompt, "image_a": "img/red.png", "image_b": "img/blue.png",
                      "label": label})

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(
        BOM + pair("first", "ok a red kite", "A")                              # line 1, after the BOM
        + b'{"id": "latin1", "prompt": "ok caf\xe9", "image_a": "img/red.png"}\n'  # line 2: not UTF-8
        + NOT_JSON                                                              # line 3: not JSON
        + pair("odd", "ok " + SURROGATE_PROMPT, "B")                           # line 4: lone surrogate
        + pair("last", "ok a blue kite", "B")                                  # line 5
    )
    out = tmp_path / "parrot"
    cfg = resolve_config(overrides={"pairs": str(pairs), "out": str(out)})
    with ScriptedServer(judge("parrot-teacher")) as server:
        stats = Parrot(cfg, backend=OpenAIBackend(server.base_url, "teacher", max_retries=0, backoff_base=0.01,
                                                  backoff_max=0.02)).run(("ingest", "anchor"))
    assert [r["id"] for r in read_rows(out / "pairs.jsonl")] == ["first", "last"]
    bad = {b["id"]: b for b in read_rows(out / "bad_pairs.jsonl")}
    assert set(bad) == {"line-2", "line-3", "odd"}
    assert bad["line-2"] == {"id": "line-2", "reason": "encoding",
                             "error": "pairs.jsonl:2: not UTF-8 text (byte 0xe9 at column 35)"}
    assert bad["line-3"]["reason"] == "json"
    assert bad["line-3"]["error"].startswith("pairs.jsonl:3: not valid JSON")
    assert bad["odd"] == {"id": "odd", "reason": "encoding",
                          "error": "pairs.jsonl:4: text with a lone surrogate (not valid Unicode)"}
    # Both good pairs went to the teacher and came back anchored.
    assert {r["id"] for r in read_rows(out / "anchored.jsonl")} == {"first", "last"}
    assert stats["pairs"]["bad"] == 3
    assert stats["pairs"]["bad_reasons"] == {"encoding": 2, "json": 1}


# -- eval -----------------------------------------------------------------------------------------


def pairwise_judge(req) -> str:
    from rationalrewards.testing.scripted_server import pairwise_text

    q = {"text_faithfulness": 4.0, "image_faithfulness": 4.0, "physical_quality": 4.0, "text_rendering": None}
    low = {**q, "text_faithfulness": 1.0, "physical_quality": 1.0}
    return pairwise_text(detect_task(req), q, low)  # A always wins


def test_eval_lists_each_bad_line_with_its_reason_and_scores_the_rest(tmp_path):
    from rationalrewards.eval import evaluate

    (tmp_path / "a.png").write_bytes(png((200, 0, 0)))
    (tmp_path / "b.png").write_bytes(png((0, 0, 200)))

    def pair(pid: str, prompt: str) -> bytes:
        return jline({"id": pid, "prompt": prompt, "image_a": "a.png", "image_b": "b.png", "label": "A"})

    data = tmp_path / "pairs.jsonl"
    data.write_bytes(BOM + pair("first", "a red square") + NOT_UTF8 + NOT_JSON + pair("odd", SURROGATE_PROMPT)
                     + pair("last", "a blue square"))
    logged: list[str] = []
    with ScriptedServer(pairwise_judge) as server:
        rm = judge_model(server)
        try:
            report = evaluate(rm, "pairs", data, tmp_path / "run", concurrency=2, report={"bootstrap": 20},
                              log=logged.append)
        finally:
            rm.close()
    rows = {r["id"]: r for r in read_rows(tmp_path / "run" / "results.jsonl")}
    # The good pairs were judged (A wins, as labelled); the surrogate prompt is a counted input
    # failure, saved with its prompt intact.
    assert rows["first"]["ok"] and rows["last"]["ok"]
    assert rows["odd"]["ok"] is False and rows["odd"]["error_kind"] == "input"
    assert rows["odd"]["prompt"] == SURROGATE_PROMPT
    assert report["n"] == 3 and report["n_failed"] == 1
    assert report["accuracy"] == pytest.approx(2 / 3)
    # The unreadable lines have no label to score against: counted and listed with the unknown
    # labels under line-N, the reason in place of the raw label, and logged.
    unknown = report["labels"]["unknown"]
    assert unknown["n"] == 2 and unknown["ids"] == ["line-2", "line-3"]
    assert f"unreadable line-2: not UTF-8 text (byte 0xe9 at column {LATIN1_COLUMN})" in unknown["values"]
    assert any(v.startswith("unreadable line-3: not valid JSON") for v in unknown["values"])
    assert logged[0] == f"skipped unreadable line: {data}:2: not UTF-8 text (byte 0xe9 at column {LATIN1_COLUMN})"
    assert logged[1].startswith(f"skipped unreadable line: {data}:3: not valid JSON")


def test_eval_data_without_one_usable_line_is_an_input_error(tmp_path):
    from rationalrewards.eval import Evaluation

    data = tmp_path / "pairs.jsonl"
    data.write_bytes(BOM + NOT_UTF8 + NOT_JSON)
    with pytest.raises(InputFileError):
        Evaluation("pairs", data, tmp_path / "run")


def test_eval_resume_with_other_sampling_or_na_settings_is_refused(tmp_path):
    from rationalrewards.eval import evaluate

    (tmp_path / "a.png").write_bytes(png((200, 0, 0)))
    (tmp_path / "b.png").write_bytes(png((0, 0, 200)))
    data = tmp_path / "pairs.jsonl"
    data.write_bytes(jline({"id": "p", "prompt": "a square", "image_a": "a.png", "image_b": "b.png", "label": "A"}))
    out = tmp_path / "run"
    with ScriptedServer(pairwise_judge) as server:
        def run(**rm_options) -> None:
            rm = RewardModel(OpenAIBackend(server.base_url, "judge", max_retries=0), **rm_options)
            try:
                evaluate(rm, "pairs", data, out, concurrency=1, report={"bootstrap": 20})
            finally:
                rm.close()

        run(allow_na=["text_rendering"])
        run(allow_na=["text_rendering"])  # same settings: resumes
        with pytest.raises(InputFileError, match=r"model\.allow_na: saved \['text_rendering'\], now \[\]"):
            run(allow_na=[])
        with pytest.raises(InputFileError, match=r"model\.temperature: saved 0\.1, now 0\.0"):
            run(allow_na=["text_rendering"], sampling=SamplingParams(temperature=0.0))
        with pytest.raises(InputFileError, match=r"model\.max_tokens: saved 4096, now 512"):
            run(allow_na=["text_rendering"], sampling=SamplingParams(max_tokens=512))


def test_curate_csv_prompts_file_with_a_bom_reads_and_one_not_in_utf8_is_refused_by_name(tmp_path):
    from rationalrewards.curate import open_items

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(png((200, 200, 0)))
    (folder / "prompts.csv").write_bytes(BOM + b"file_name,prompt\na.png,a yellow square\n")
    assert [(i.id, i.prompt) for i in open_items(folder)] == [("a.png", "a yellow square")]
    (folder / "prompts.csv").write_bytes(b"file_name,prompt\na.png,caf\xe9\n")
    with pytest.raises(InputFileError, match=r"prompts\.csv: not UTF-8 text \(byte 0xe9"):
        open_items(folder)


def test_curate_caption_not_in_utf8_rejects_that_image_only(tmp_path):
    from rationalrewards.curate import open_items

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / f"{name}.png").write_bytes(png((200, 200, 0)))
    (folder / "a.txt").write_bytes(BOM + b"a yellow square\n")
    (folder / "b.txt").write_bytes(b"caf\xe9\n")
    items = {i.id: i for i in open_items(folder)}
    assert items["a.png"].prompt == "a yellow square" and items["a.png"].problem is None
    assert items["b.png"].problem == f"{folder / 'b.txt'}: not UTF-8 text (byte 0xe9 at offset 3)"
