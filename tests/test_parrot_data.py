"""Reading preference pairs: canonical columns, presets of public sources, image cells of every
kind, and bad rows that are reported with their id instead of stopping the run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from rationalrewards.io import InputFileError
from rationalrewards.parrot.data import PairError, load_pairs, normalise_label


def png(colour: str, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("value,fmt,expected", [
    ("A", "ab", "A"), ("b", "ab", "B"), ("Image A", "ab", "A"), ("tie", "ab", "tie"), ("It's a tie", "ab", "tie"),
    ("leftvote", "ab", "A"), ("rightvote", "ab", "B"), ("bothbad_vote", "ab", "tie"),
    ("A>B", "ranking", "A"), ("B > A", "ranking", "B"), ("A<B", "ranking", "B"), ("A=B", "ranking", "tie"),
    ("1>2", "ranking", "A"), ("A>B", "ab", "A"),
    (1.0, "prob_a", "A"), (0, "prob_a", "B"), (0.5, "prob_a", "tie"),
    (0, "index", "A"), ("1", "index", "B"),
])
def test_labels_in_the_common_notations(value, fmt, expected):
    assert normalise_label(value, fmt) == expected


@pytest.mark.parametrize("value,fmt,message", [
    ("C", "ab", "unknown label"), (None, "ab", "missing"), (0.7, "prob_a", "expected 1"), ("A>A", "ranking", "ranking"),
    (1, "auto", "label_format"), (2, "index", "index"),
])
def test_unknown_labels_are_refused_with_the_value(value, fmt, message):
    with pytest.raises(PairError) as exc:
        normalise_label(value, fmt)
    assert message in str(exc.value) and exc.value.kind == "label"


@pytest.fixture
def imgs(tmp_path: Path) -> Path:
    for c in ("red", "green", "blue"):
        (tmp_path / f"{c}.png").write_bytes(png(c))
    return tmp_path


def test_canonical_jsonl_with_relative_paths_edit_sources_and_ids(imgs, tmp_path):
    rows = [
        {"id": 7, "prompt": "a red kite", "image_a": "red.png", "image_b": "green.png", "label": "A"},
        {"prompt": "add a hat", "source": ["red.png", "blue.png"], "image_a": "green.png", "image_b": "blue.png",
         "label": "B", "category": "accessory"},
    ]
    path = imgs / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, bad = load_pairs(path, tmp_path / "out")
    assert bad == []
    assert [p.id for p in pairs] == ["7", "line-2"]
    assert pairs[0].task == "t2i" and pairs[1].task == "edit" and len(pairs[1].source) == 2
    assert pairs[1].category == "accessory"
    # Content addressed: the same red picture is one file, named by its hash.
    assert pairs[0].image_a == pairs[1].source[0]
    assert (tmp_path / "out" / pairs[0].image_a).read_bytes() == png("red")


def test_bad_rows_are_reported_with_id_and_reason_and_the_rest_continues(imgs, tmp_path):
    (imgs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows = [
        {"id": "ok", "prompt": "p", "image_a": "red.png", "image_b": "green.png", "label": "A"},
        {"id": "missing", "prompt": "p", "image_a": "nope.png", "image_b": "green.png", "label": "A"},
        {"id": "corrupt", "prompt": "p", "image_a": "broken.png", "image_b": "green.png", "label": "A"},
        {"id": "nolabel", "prompt": "p", "image_a": "red.png", "image_b": "green.png", "label": ""},
        {"id": "noprompt", "image_a": "red.png", "image_b": "green.png", "label": "A"},
        {"id": "ok", "prompt": "again", "image_a": "red.png", "image_b": "green.png", "label": "B"},
        {"id": "badtask", "task": "video", "prompt": "p", "image_a": "red.png", "image_b": "green.png", "label": "A"},
        {"id": "edit_nosrc", "task": "edit", "prompt": "p", "image_a": "red.png", "image_b": "green.png", "label": "A"},
    ]
    path = imgs / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, bad = load_pairs(path, tmp_path / "out")
    assert [p.id for p in pairs] == ["ok"]
    reasons = {b["id"]: b["reason"] for b in bad}
    assert reasons == {"missing": "image", "corrupt": "image", "nolabel": "label", "noprompt": "prompt",
                       "ok": "duplicate_id", "badtask": "task", "edit_nosrc": "image"}
    errors = {b["id"]: b["error"] for b in bad}
    assert "nope.png" in errors["missing"] and "broken.png" in errors["corrupt"]


def test_pick_a_pic_style_parquet_with_image_bytes_is_detected(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({
        "ranking_id": ["r1", "r2", "r3"],
        "caption": ["a cat", "a dog", "a cow"],
        "jpg_0": [png("red"), png("green"), png("blue")],
        "jpg_1": [png("blue"), png("red"), png("green")],
        "label_0": [1.0, 0.0, 0.5],
    })
    pq.write_table(table, tmp_path / "pickapic.parquet")
    pairs, bad = load_pairs(tmp_path / "pickapic.parquet", tmp_path / "out")
    assert bad == []
    assert [(p.id, p.prompt, p.label) for p in pairs] == [("r1", "a cat", "A"), ("r2", "a dog", "B"),
                                                         ("r3", "a cow", "tie")]


def test_editreward_style_rows_with_ranking_strings_and_hf_image_dicts(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    def cell(colour):
        return {"bytes": png(colour), "path": f"{colour}.png"}

    table = pa.table({
        "instruction": ["make it blue", "make it green"],
        "source_image": [cell("red"), cell("red")],
        "candidate_1": [cell("blue"), cell("blue")],
        "candidate_2": [cell("green"), cell("green")],
        "ranking": ["A>B", "B>A"],
    })
    pq.write_table(table, tmp_path / "edits.parquet")
    pairs, bad = load_pairs(tmp_path / "edits.parquet", tmp_path / "out")
    assert bad == []
    assert [(p.task, p.label, len(p.source)) for p in pairs] == [("edit", "A", 1), ("edit", "B", 1)]
    assert [p.id for p in pairs] == ["row-0", "row-1"]


def test_chosen_rejected_sources_become_label_a(imgs, tmp_path):
    rows = [{"prompt": "p", "path1": "red.png", "path2": "green.png"}]
    (imgs / "hpd.jsonl").write_text(json.dumps(rows[0]) + "\n")
    pairs, bad = load_pairs(imgs / "hpd.jsonl", tmp_path / "out")
    assert bad == [] and pairs[0].label == "A"
    assert (tmp_path / "out" / pairs[0].image_a).read_bytes() == png("red")


def test_a_column_mapping_reads_any_layout(imgs, tmp_path):
    rows = [{"uid": "x", "text": "p", "left": "red.png", "right": "green.png", "winner": "right"}]
    (imgs / "own.jsonl").write_text(json.dumps(rows[0]) + "\n")
    cols = {"id": "uid", "prompt": "text", "image_a": "left", "image_b": "right", "label": "winner"}
    pairs, bad = load_pairs(imgs / "own.jsonl", tmp_path / "out", columns=cols)
    assert bad == [] and (pairs[0].id, pairs[0].label) == ("x", "B")
    with pytest.raises(InputFileError, match="cannot tell which columns"):
        load_pairs(imgs / "own.jsonl", tmp_path / "out")
    with pytest.raises(InputFileError, match="unknown canonical column"):
        load_pairs(imgs / "own.jsonl", tmp_path / "out", columns={"picture": "left"})


def test_saved_hugging_face_dataset_folder_with_image_features(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({
        "prompt": ["a red kite", "a blue kite"],
        "image_a": [Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")],
        "image_b": [Image.new("RGB", (8, 8), "green"), Image.new("RGB", (8, 8), "red")],
        "label": ["A", "B"],
    }).cast_column("image_a", datasets.Image()).cast_column("image_b", datasets.Image())
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "hf"))
    pairs, bad = load_pairs(tmp_path / "hf", tmp_path / "out")
    assert bad == [] and [p.label for p in pairs] == ["A", "B"]
    test_pairs, _ = load_pairs(tmp_path / "hf", tmp_path / "out", split="test")
    assert len(test_pairs) == 1
    with pytest.raises(InputFileError, match="no split"):
        load_pairs(tmp_path / "hf", tmp_path / "out", split="validation")


def test_large_images_are_capped_before_storing(tmp_path):
    (tmp_path / "big.png").write_bytes(png("red", 300))
    (tmp_path / "small.png").write_bytes(png("blue"))
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "p", "image_a": "big.png", "image_b": "small.png",
                                                  "label": "A"}) + "\n")
    pairs, _ = load_pairs(tmp_path / "p.jsonl", tmp_path / "out", max_pixels=100 * 100)
    with Image.open(tmp_path / "out" / pairs[0].image_a) as im:
        assert im.size[0] * im.size[1] <= 100 * 100


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        load_pairs(tmp_path / "none.jsonl", tmp_path / "out")
    (tmp_path / "p.csv").write_text("a,b\n")
    with pytest.raises(InputFileError, match="unsupported"):
        load_pairs(tmp_path / "p.csv", tmp_path / "out")
