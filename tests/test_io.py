"""Resumable JSONL stores: what a killed or failed run leaves behind is retried, never duplicated."""

from __future__ import annotations

import json

import pytest

from rationalrewards.io import InputFileError, ResumableJsonl, assign_ids, atomic_write_json, read_jsonl


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
