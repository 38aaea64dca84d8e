"""Resumable JSONL stores: what a killed or failed run leaves behind is retried, never duplicated."""

from __future__ import annotations

import json

import pytest

from rationalrewards.io import (
    InputFileError,
    LineProblem,
    ResumableJsonl,
    assign_ids,
    atomic_write_json,
    dumps_line,
    pin_settings,
    read_jsonl,
    settings_path_for,
)


def test_reopening_keeps_finished_rows_and_drops_failed_and_torn_ones(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(
        json.dumps({"id": "a", "ok": True}) + "\n"
        + json.dumps({"id": "b", "ok": False}) + "\n"
        + '{"id": "c", "ok": tr'  # torn by a kill
    )
    store = ResumableJsonl(path)
    assert store.done == {"a"}
    assert store.dropped == 2
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["a"]
    store.append({"id": "b", "ok": False})
    assert store.done == {"a"}  # a failure written in this run is not done
    store.append({"id": "b", "ok": True})
    store.append({"id": "c", "ok": True})
    rows = store.finalize(["c", "b", "a"])
    assert [r["id"] for r in rows] == ["c", "b", "a"]
    assert all(r["ok"] for r in rows)
    assert len(path.read_text().splitlines()) == 3


def test_read_jsonl_names_file_line_and_field(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 1, "prompt": "x"}\n\nnot json\n')
    with pytest.raises(InputFileError, match=r"in\.jsonl:3: not valid JSON"):
        read_jsonl(path)
    path.write_text('{"id": 1, "prompt": ""}\n')
    with pytest.raises(InputFileError, match=r"in\.jsonl:1: missing field\(s\) prompt"):
        read_jsonl(path, required=["prompt"])
    with pytest.raises(InputFileError, match="not found"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_ids_default_to_line_numbers_and_duplicates_are_refused(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"prompt": "x"}\n{"id": 7, "prompt": "y"}\n')
    rows = assign_ids(read_jsonl(path), path)
    assert [r["id"] for r in rows] == ["line-1", "7"]
    path.write_text('{"id": "a"}\n{"id": "a"}\n')
    with pytest.raises(InputFileError, match="duplicate id 'a'"):
        assign_ids(read_jsonl(path), path)


def test_atomic_writes_leave_readable_files(tmp_path):
    target = tmp_path / "sub" / "x.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert target.stat().st_mode & 0o044  # not the 0600 of a temp file
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]


def test_a_bom_blank_lines_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "prompt": "x"}\r\n\r\n   \n{"id": "b", "prompt": "y"}\r\n')
    assert [r["id"] for r in read_jsonl(path, required=["prompt"])] == ["a", "b"]


def test_bad_lines_are_collected_with_their_line_and_id_when_asked(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b'{"id": "a", "prompt": "x"}\n'
        b'{"id": "latin", "prompt": "caf\xe9"}\n'      # not UTF-8
        b'{"id": "c", "prompt": \n'                     # not JSON
        b'[1, 2]\n'                                     # not an object
        b'{"id": "e"}\n'                                # missing field: keeps its id
        + b"[" * 100_000 + b"\n"                        # nested too deeply for the parser
        + b'{"id": "a", "prompt": "again"}\n'           # duplicate of line 1
        b'{"id": "h", "prompt": "ok"}\n'
    )
    problems: list[LineProblem] = []
    rows = assign_ids(read_jsonl(path, required=["prompt"], problems=problems), path, problems=problems)
    assert [r["id"] for r in rows] == ["a", "h"]
    found = {p.line: p for p in problems}
    assert sorted(found) == [2, 3, 4, 5, 6, 7]
    assert "in.jsonl:2: not UTF-8" in found[2].message
    assert "not valid JSON" in found[3].message
    assert "expected a JSON object, got list" in found[4].message
    assert found[5].id == "e" and "missing field(s) prompt" in found[5].message
    assert "nested too deeply" in found[6].message or "not valid JSON" in found[6].message
    assert "duplicate id 'a' (first on line 1)" in found[7].message
    # Without a list the first problem raises, as before (a clean error, not a UnicodeDecodeError).
    with pytest.raises(InputFileError, match=r"in\.jsonl:2: not UTF-8"):
        read_jsonl(path)


def test_an_id_held_by_an_earlier_bad_line_is_not_reused(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a"}\n{"id": "a", "prompt": "x"}\n')
    problems: list[LineProblem] = []
    rows = assign_ids(read_jsonl(path, required=["prompt"], problems=problems), path, problems=problems)
    assert rows == []
    assert [p.line for p in problems] == [1, 2] and "first on line 1" in problems[1].message


def test_a_row_with_a_lone_surrogate_is_written_and_reads_back_the_same(tmp_path):
    path = tmp_path / "r.jsonl"
    store = ResumableJsonl(path)
    row = {"id": "x\ud800", "ok": True, "prompt": "cat \ud800 and café"}
    store.append(row)
    store.append({"id": "plain", "ok": True, "prompt": "café"})
    store.finalize()
    lines = path.read_bytes().decode("utf-8").splitlines()
    assert "café" in lines[1]  # ordinary text stays readable
    assert json.loads(lines[0]) == row
    assert ResumableJsonl(path).done == {"x\ud800", "plain"}  # the resumed run sees the same id
    assert json.loads(dumps_line(row)) == row
    atomic_write_json(tmp_path / "s.json", row)
    assert json.loads((tmp_path / "s.json").read_text()) == row


def test_a_results_file_with_non_utf8_bytes_counts_that_line_as_torn(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id": "a", "ok": true}\n{"id": "b", "ok": true, "x": "\xff"}\n')
    store = ResumableJsonl(path)
    assert store.done == {"a"} and store.dropped == 1


def test_settings_are_pinned_beside_the_output(tmp_path):
    out = tmp_path / "results.jsonl"
    sidecar = settings_path_for(out)
    assert sidecar.name == "results.jsonl.settings.json"
    assert pin_settings(out, {"model": "m", "temperature": 0.1}) is None  # nothing saved yet: fine
    out.write_text('{"id": "a", "ok": true}\n')
    assert pin_settings(out, {"model": "m", "temperature": 0.1}) is None  # same settings: resume
    with pytest.raises(InputFileError, match=r"temperature: saved 0\.1, now 0\.7.*--overwrite"):
        pin_settings(out, {"model": "m", "temperature": 0.7})
    assert out.read_text()  # refusing touches nothing
    pin_settings(out, {"model": "m", "temperature": 0.7}, overwrite=True)
    assert not out.exists() and json.loads(sidecar.read_text())["temperature"] == 0.7
    # Results without a settings file (an older version wrote them) are kept, with a note.
    out.write_text('{"id": "a", "ok": true}\n')
    sidecar.unlink()
    note = pin_settings(out, {"model": "m"})
    assert note and "cannot be checked" in note and sidecar.is_file()
    # A key the saved file does not have (added by a later version) is not a difference.
    assert pin_settings(out, {"model": "m", "new_setting": 1}) is None
