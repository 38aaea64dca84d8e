"""Bad input through the real console script: every kind gets a clear message and the right exit
code, and in a batch one bad item never takes the others down (they complete and are saved).

Each case runs ``rationalrewards`` in a subprocess against the scripted judge server.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from rationalrewards.testing.scripted_server import ScriptedServer, critique_text, judge_responder

EXE = str(Path(sys.executable).parent / "rationalrewards")
T2I = {"text_faithfulness": 3.5, "physical_quality": 2.5, "text_rendering": None}
# Good lines every batch case carries beside its bad one: they must all come out ok.
GOOD_IDS = ("good-1", "good-2")


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    # Wide columns: rich wraps error panels at the terminal width, which would split the words
    # the assertions look for.
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "NO_COLOR": "1", "COLUMNS": "250", **(env or {})})


def png_bytes(size: tuple[int, int] = (40, 40), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server():
    with ScriptedServer(judge_responder(T2I)) as srv:
        yield srv


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "img.png").write_bytes(png_bytes())
    return tmp_path


# -- batch cases: (the bad line(s) as raw bytes, the id the failure is saved under, message words) ----
@dataclass
class BatchCase:
    name: str
    bad: Callable[[Path], bytes]        # raw bytes of the bad line(s), given the data folder
    failed_id: str | None                # id of the failed row in the output (None: no failure)
    words: tuple[str, ...] = ()          # all must appear in that row's error
    prefix: bytes = b""                  # written before everything (a BOM)
    kind: str = "critique"


def line(obj: dict, *, ascii_only: bool = True) -> bytes:
    return (json.dumps(obj, ensure_ascii=ascii_only) + "\n").encode("utf-8")


def _pixel_bomb(folder: Path) -> bytes:
    # 9000 x 9000 = 81 M pixels, over the 64 M decode limit; a bilevel PNG keeps the file tiny.
    Image.new("1", (9000, 9000)).save(folder / "bomb.png")
    return line({"id": "bomb", "prompt": "p", "image": "bomb.png"})


def _data_url(folder: Path) -> bytes:
    url = "data:image/png;base64," + base64.b64encode(png_bytes(color=(1, 2, 3))).decode()
    return line({"id": "inline", "prompt": "p", "image": url})


BATCH_CASES = [
    BatchCase("surrogate_prompt", lambda f: line({"id": "sur", "prompt": "cat \ud800", "image": "img.png"}),
              "sur", ("prompt", "surrogate")),
    BatchCase("surrogate_id", lambda f: line({"id": "x\ud800", "prompt": "p", "image": "nope.png"}),
              "x\ud800", ("nope.png",)),
    BatchCase("non_utf8_line", lambda f: b'{"id": "latin", "prompt": "caf\xe9", "image": "img.png"}\n',
              "line-2", ("requests.jsonl:2", "UTF-8")),
    BatchCase("bom_is_accepted", lambda f: line({"id": "bom", "prompt": "p", "image": "img.png"}), None,
              prefix=b"\xef\xbb\xbf"),
    BatchCase("blank_lines_are_skipped", lambda f: b"\n   \n\t\n", None),
    BatchCase("not_json", lambda f: b'{"id": "x", "prompt": \n', "line-2", ("requests.jsonl:2", "not valid JSON")),
    BatchCase("not_an_object", lambda f: b'["p", "img.png"]\n', "line-2", ("requests.jsonl:2", "JSON object")),
    BatchCase("missing_prompt", lambda f: line({"id": "np", "image": "img.png"}), "np", ("missing", "prompt")),
    BatchCase("missing_image_field", lambda f: line({"id": "ni", "prompt": "p"}), "ni", ("missing", "image")),
    BatchCase("prompt_wrong_type", lambda f: line({"id": "wt", "prompt": 5, "image": "img.png"}), "wt",
              ("prompt", "string", "int")),
    BatchCase("image_wrong_type", lambda f: line({"id": "wi", "prompt": "p", "image": {"x": 1}}), "wi",
              ("image", "string")),
    BatchCase("source_wrong_type", lambda f: line({"id": "ws", "prompt": "p", "image": "img.png", "source": 3}),
              "ws", ("source",)),
    BatchCase("missing_image_file", lambda f: line({"id": "mf", "prompt": "p", "image": "nope.png"}), "mf",
              ("not found", "nope.png")),
    BatchCase("corrupt_image", lambda f: ((f / "junk.png").write_bytes(b"not a png at all"),
                                          line({"id": "ci", "prompt": "p", "image": "junk.png"}))[1],
              "ci", ("junk.png", "not a recognised image")),
    BatchCase("pixel_bomb", _pixel_bomb, "bomb", ("bomb.png", "pixels")),
    BatchCase("data_url_is_accepted", _data_url, None),
    BatchCase("bad_data_url", lambda f: line({"id": "bd", "prompt": "p", "image": "data:image/png;base64,@@@"}),
              "bd", ("base64",)),
    BatchCase("data_url_without_base64", lambda f: line({"id": "b6", "prompt": "p", "image": "data:image/png,abc"}),
              "b6", ("data URL", "base64")),
    BatchCase("duplicate_id", lambda f: line({"id": "good-1", "prompt": "again", "image": "img.png"}), "line-2",
              ("duplicate id", "good-1", "first on line 1")),
    BatchCase("compare_missing_image_b", lambda f: line({"id": "cb", "prompt": "p", "image_a": "img.png"}), "cb",
              ("missing", "image_b"), kind="compare"),
]


@pytest.mark.parametrize("case", BATCH_CASES, ids=lambda c: c.name)
def test_a_bad_batch_line_fails_alone_and_the_rest_is_saved(case: BatchCase, folder: Path, server):
    if case.kind == "critique":
        good = [line({"id": i, "prompt": f"a red ball {i}", "image": "img.png"}) for i in GOOD_IDS]
    else:
        good = [line({"id": i, "prompt": "p", "image_a": "img.png", "image_b": "img.png"}) for i in GOOD_IDS]
    requests = folder / "requests.jsonl"
    requests.write_bytes(case.prefix + good[0] + case.bad(folder) + good[1])
    out = folder / "out" / "results.jsonl"
    res = run(case.kind, "--input", str(requests), "--output", str(out), "--base-url", server.base_url,
              "--model", "judge")
    assert res.returncode == 0, res.stderr  # failed items are reported, not fatal (see --strict)
    rows = [json.loads(x) for x in out.read_bytes().decode("utf-8").splitlines()]
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows)
    for gid in GOOD_IDS:
        assert by_id[gid]["ok"] is True, by_id[gid]["error"]
    failed = [r for r in rows if not r["ok"]]
    if case.failed_id is None:
        assert not failed and len(rows) == len(GOOD_IDS) + (0 if case.name == "blank_lines_are_skipped" else 1)
        assert "0 bad inputs" in res.stderr
        return
    assert [r["id"] for r in failed] == [case.failed_id]
    row = failed[0]
    assert row["error_kind"] == "input"
    for word in case.words:
        assert word in row["error"], (word, row["error"])
    assert "1 bad inputs" in res.stderr
    # A rerun retries the failure (it fails the same way) and keeps the finished rows: one line per id.
    again = run(case.kind, "--input", str(requests), "--output", str(out), "--base-url", server.base_url,
                "--model", "judge", "--strict")
    assert again.returncode == 2  # --strict: a bad input makes the exit code say so
    rows2 = [json.loads(x) for x in out.read_bytes().decode("utf-8").splitlines()]
    assert sorted(r["id"] for r in rows2) == sorted(by_id)


# -- command-level bad inputs: exit 2 before any judging, the message names what was wrong ----------
@dataclass
class CommandCase:
    name: str
    args: tuple[str, ...]
    words: tuple[str, ...]
    command: str = "critique"
    batch: bool = False                  # run as a batch (--input/--output) rather than one item


OPTION_CASES = [
    CommandCase("concurrency_0", ("--concurrency", "0"), ("--concurrency", ">= 1")),
    CommandCase("concurrency_negative", ("--concurrency", "-1"), ("--concurrency",)),
    CommandCase("max_retries_negative", ("--max-retries", "-1"), ("--max-retries", ">= 0")),
    CommandCase("max_pixels_0", ("--max-pixels", "0"), ("--max-pixels",)),
    CommandCase("max_pixels_negative", ("--max-pixels", "-5"), ("--max-pixels",)),
    CommandCase("max_tokens_0", ("--max-tokens", "0"), ("--max-tokens",)),
    CommandCase("max_tokens_negative", ("--max-tokens", "-5"), ("--max-tokens",)),
    CommandCase("temperature_nan", ("--temperature", "nan"), ("--temperature", "finite")),
    CommandCase("temperature_negative", ("--temperature", "-1"), ("--temperature", ">= 0")),
    CommandCase("temperature_inf", ("--temperature", "inf"), ("--temperature", "finite")),
    CommandCase("timeout_negative", ("--timeout", "-1"), ("--timeout", "> 0")),
    CommandCase("timeout_zero", ("--timeout", "0"), ("--timeout", "> 0")),
    CommandCase("batch_size_0", ("--batch-size", "0"), ("--batch-size",)),
    CommandCase("device_unknown", ("--device", "gpu9"), ("--device", "gpu9")),
    CommandCase("dtype_unknown", ("--dtype", "int3"), ("--dtype", "int3")),
    CommandCase("base_url_not_http", ("--base-url", "ftp://127.0.0.1/v1"), ("--base-url", "http")),
    CommandCase("tie_tolerance_nan", ("--tie-tolerance", "nan"), ("--tie-tolerance", "finite"), command="compare"),
    CommandCase("tie_tolerance_negative", ("--tie-tolerance", "-1"), ("--tie-tolerance",), command="compare"),
    CommandCase("mode_unknown", ("--mode", "sideways"), ("--mode", "sideways"), command="compare"),
    CommandCase("aggregation_unknown_dimension", ("--aggregation", "text_faithfulness=1,sharpness=2"),
                ("--aggregation", "sharpness")),
    CommandCase("aggregation_unknown_dimension_batch", ("--aggregation", "sharpness=1"),
                ("--aggregation", "sharpness"), batch=True),
    CommandCase("aggregation_unknown_preset", ("--aggregation", "fancy"), ("--aggregation", "fancy")),
    CommandCase("aggregation_nan_weight", ("--aggregation", "text_faithfulness=nan"), ("--aggregation",)),
    CommandCase("aggregation_negative_weight", ("--aggregation", "text_faithfulness=-1"), ("--aggregation",)),
    CommandCase("aggregation_all_zero", ("--aggregation", "text_faithfulness=0,physical_quality=0"),
                ("--aggregation",)),
    CommandCase("allow_na_unknown", ("--allow-na", "sharpness"), ("--allow-na", "sharpness")),
    CommandCase("missing_model_folder", ("--model", "./does-not-exist"), ("does-not-exist",)),
    CommandCase("missing_model_folder_absolute", ("--model", "/no/such/model/dir"), ("/no/such/model/dir",)),
]


@pytest.mark.parametrize("case", OPTION_CASES, ids=lambda c: c.name)
def test_bad_option_values_exit_2_naming_the_option_before_any_judging(case: CommandCase, folder: Path, server):
    before = server.chat_request_count
    args = list(case.args)
    if "--base-url" not in args and "--model" not in args:
        args += ["--base-url", server.base_url, "--model", "judge"]
    if case.batch:
        requests = folder / "requests.jsonl"
        requests.write_text(json.dumps({"id": "a", "prompt": "p", "image": "img.png"}) + "\n")
        args += ["--input", str(requests), "--output", str(folder / "out.jsonl")]
    elif case.command == "compare":
        args += ["--prompt", "p", "--image-a", str(folder / "img.png"), "--image-b", str(folder / "img.png")]
    else:
        args += ["--prompt", "p", "--image", str(folder / "img.png")]
    res = run(case.command, *args)
    assert res.returncode == 2, res.stdout + res.stderr
    message = res.stdout + res.stderr
    for word in case.words:
        assert word in message, (word, message)
    assert "Traceback" not in message
    assert server.chat_request_count == before  # refused before the judge was asked anything
    if case.batch:
        assert not (folder / "out.jsonl").exists()


def _batch_files(folder: Path) -> Path:
    requests = folder / "requests.jsonl"
    requests.write_text("".join(json.dumps({"id": i, "prompt": "p", "image": "img.png"}) + "\n" for i in GOOD_IDS))
    return requests


def test_output_that_is_the_input_is_refused_even_through_a_symlink_or_relative_path(folder: Path, server):
    requests = _batch_files(folder)
    original = requests.read_bytes()
    (folder / "link.jsonl").symlink_to(requests)
    for output, cwd in ((str(requests), None), (str(folder / "link.jsonl"), None), ("./requests.jsonl", folder)):
        res = run("critique", "--input", str(requests), "--output", output, "--base-url", server.base_url,
                  "--model", "judge", cwd=cwd)
        assert res.returncode == 2, res.stderr
        assert "is the input file" in res.stderr
        assert requests.read_bytes() == original


def test_output_that_is_a_folder_is_a_clear_error(folder: Path, server):
    requests = _batch_files(folder)
    (folder / "outdir").mkdir()
    res = run("critique", "--input", str(requests), "--output", str(folder / "outdir"), "--base-url",
              server.base_url, "--model", "judge")
    assert res.returncode == 2
    assert "is a folder" in res.stderr and "outdir" in res.stderr and "Traceback" not in res.stderr


def test_input_that_is_missing_or_a_folder_exits_2(folder: Path, server):
    for bad in (folder / "nope.jsonl", folder):
        res = run("critique", "--input", str(bad), "--output", str(folder / "o.jsonl"), "--base-url",
                  server.base_url, "--model", "judge")
        assert res.returncode == 2 and str(bad) in res.stderr


def test_changed_settings_on_resume_are_refused_until_overwrite(folder: Path, server):
    requests = _batch_files(folder)
    out = folder / "results.jsonl"
    base = ("critique", "--input", str(requests), "--output", str(out), "--base-url", server.base_url,
            "--model", "judge")
    assert run(*base).returncode == 0
    assert (folder / "results.jsonl.settings.json").is_file()
    first = out.read_bytes()
    for extra, word in ((("--temperature", "0.7"), "temperature"), (("--model", "other"), "model"),
                        (("--aggregation", "release-edit-rl"), "aggregation"),
                        (("--allow-na", "all"), "allow_na"), (("--max-tokens", "99"), "max_tokens"),
                        (("--scores-only",), "scores_only")):
        changed = run(*base, *extra)
        assert changed.returncode == 2, (extra, changed.stderr)
        assert word in changed.stderr and "--overwrite" in changed.stderr
        assert out.read_bytes() == first  # nothing was touched
    same = run(*base)
    assert same.returncode == 0 and "0 to run" in same.stderr
    before = server.chat_request_count
    restarted = run(*base, "--temperature", "0.7", "--overwrite")
    assert restarted.returncode == 0, restarted.stderr
    assert server.chat_request_count == before + len(GOOD_IDS)  # started over: everything judged again
    saved = json.loads((folder / "results.jsonl.settings.json").read_text())
    assert saved["temperature"] == 0.7


def test_rich_markup_in_prompt_and_model_text_is_printed_literally(folder: Path):
    summary = "see [link=http://evil.example]here[/link] and [/] and [bold]x"

    def respond(req):
        return critique_text("t2i", T2I, summary=summary)

    with ScriptedServer(respond) as srv:
        res = run("critique", "--prompt", "a cat [/] x [red]", "--image", str(folder / "img.png"),
                  "--base-url", srv.base_url, "--model", "judge")
    assert res.returncode == 0, res.stderr
    assert "[link=http://evil.example]here[/link]" in res.stdout
    assert "[/] and [bold]x" in res.stdout
    assert "\x1b]8;" not in res.stdout  # no terminal hyperlink escape sequence


def test_rich_markup_in_a_failure_reason_is_printed_literally(folder: Path):
    with ScriptedServer(lambda req: "no structure [/] here [link=http://x]y[/link]") as srv:
        res = run("critique", "--prompt", "p", "--image", str(folder / "img.png"), "--base-url", srv.base_url,
                  "--model", "judge")
    assert res.returncode == 3
    assert "[link=http://x]y[/link]" in res.stdout


# -- a command that needs an extra the install lacks: say which one, exit 2, no traceback -----------
BLOCKER = textwrap.dedent("""
    import os, sys

    _BLOCKED = {m for m in os.environ.get("RR_TEST_BLOCK_MODULES", "").split(",") if m}


    class _Blocker:
        # Behaves as if these packages were not installed (the light core install).
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in _BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    sys.meta_path.insert(0, _Blocker())
""")
HEAVY = "torch,torchvision,transformers,accelerate,trl,peft,fastapi,uvicorn,diffusers,gradio,ray"


@pytest.fixture
def light_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "RR_TEST_BLOCK_MODULES": HEAVY}


@pytest.mark.parametrize(("args", "extra"), [
    (("critique", "--prompt", "p", "--image", "IMG", "--model", "org/judge"), "local"),
    (("serve", "--model", "org/judge"), "serve"),
    (("parrot", "train", "--data", "DIR", "--model", "org/student", "--out", "DIR/ckpt"), "local"),
    (("rl", "train", "-c", "RL_CONFIG", "--output-dir", "DIR/rl", "--max-steps", "1"), "local"),
    (("ui", "--demo"), "ui"),
    (("critique", "--input", "DIR/in.jsonl", "--output", "DIR/out.jsonl", "--base-url", "http://127.0.0.1:9/v1",
      "--model", "judge", "--executor", "ray"), "ray"),
    (("eval", "--benchmark", "pairs", "--data", "DIR/in.jsonl", "--out", "DIR/ev", "--base-url",
      "http://127.0.0.1:9/v1", "--model", "judge", "--executor", "ray"), "ray"),
    (("parrot", "anchor", "--pairs", "DIR/in.jsonl", "--out", "DIR/pr", "--teacher-base-url",
      "http://127.0.0.1:9/v1", "--teacher-model", "t", "--executor", "ray"), "ray"),
], ids=["critique_in_process", "serve", "parrot_train", "rl_train", "ui", "critique_on_ray", "eval_on_ray",
        "parrot_on_ray"])
def test_missing_extra_names_it_and_exits_2(args, extra, light_env, folder: Path):
    rl_config = Path(__file__).resolve().parent.parent / "examples" / "rl_tiny_smoke.yaml"
    args = tuple(a.replace("IMG", str(folder / "img.png")).replace("DIR", str(folder))
                 .replace("RL_CONFIG", str(rl_config)) for a in args)
    res = run(*args, env=light_env)
    message = res.stdout + res.stderr
    assert res.returncode == 2, message
    assert f"pip install 'rationalrewards[{extra}]'" in message
    assert "Traceback" not in message


def test_light_core_still_judges_over_http(light_env, folder: Path, server):
    res = run("critique", "--prompt", "p", "--image", str(folder / "img.png"), "--base-url", server.base_url,
              "--model", "judge", "--json", env=light_env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["ok"] is True


def test_an_input_with_no_usable_line_is_an_input_error(folder: Path, server):
    empty = folder / "empty.jsonl"
    empty.write_text("\n\n")
    res = run("critique", "--input", str(empty), "--output", str(folder / "o.jsonl"), "--base-url", server.base_url,
              "--model", "judge")
    assert res.returncode == 2 and "no lines" in res.stderr
    assert not (folder / "o.jsonl.settings.json").exists()
    wrong = folder / "wrong.jsonl"
    wrong.write_text("id,prompt,image\na,p,img.png\n")  # a CSV given as JSONL
    out = folder / "o2.jsonl"
    res = run("critique", "--input", str(wrong), "--output", str(out), "--base-url", server.base_url,
              "--model", "judge")
    assert res.returncode == 2 and "no usable line" in res.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["line-1", "line-2"] and all("not valid JSON" in r["error"] for r in rows)


@pytest.mark.parametrize("args", [
    ("parrot", "train", "--data", "DIR", "--model", "./does-not-exist", "--out", "DIR/ckpt"),
    ("parrot", "run", "--pairs", "DIR/pairs.jsonl", "--out", "DIR/run", "--teacher-model", "./does-not-exist"),
], ids=["parrot_train", "parrot_teacher"])
def test_a_missing_local_model_folder_is_an_input_error_naming_it(args, folder: Path):
    res = run(*(a.replace("DIR", str(folder)) for a in args), cwd=folder)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "no model folder at ./does-not-exist" in res.stderr and "Traceback" not in res.stderr
