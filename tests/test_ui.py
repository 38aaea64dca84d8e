"""The UI's pieces without a browser: what the HTML says, how run folders are read, who may log in."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ui_fixtures
from browser_support import served
from rationalrewards.critique.schema import CompareResult, CritiqueResult, failed_critique
from rationalrewards.ui.render import compare_html, critique_html, run_item_html
from rationalrewards.ui.runs import ImageRef, RunFolderError, RunItem, find_runs, open_run

HOSTILE = "<img src=x onerror=alert(1)> **bold** [/] {x}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return ui_fixtures.all_runs(tmp_path_factory.mktemp("ui-unit-runs"))


# -- what the page says ---------------------------------------------------------------------------------
def test_a_critique_shows_every_dimension_with_na_as_na_and_escapes_model_text():
    res = CritiqueResult(task="t2i", ok=True, reward=0.5,
                         scores={"text_faithfulness": 3.0, "physical_quality": 2.5, "text_rendering": None},
                         justifications={"text_faithfulness": HOSTILE, "physical_quality": "noisy"},
                         summary=HOSTILE)
    page = critique_html(res)
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "data-dim='text_rendering'" in page and ">N/A<" in page
    assert "3.00 / 4" in page and "2.50 / 4" in page
    assert "image_faithfulness" not in page  # not a t2i dimension


def test_a_parse_failure_is_shown_with_its_raw_text_and_no_score():
    res = failed_critique("t2i", "parse", "no '## Score:' line for Text Faithfulness", raw=HOSTILE)
    page = critique_html(res)
    assert "data-rr='error'" in page and "data-kind='parse'" in page
    assert "could not be parsed" in page and "&lt;img src=x" in page
    assert "data-rr='reward'" not in page and "data-rr='score'" not in page


def test_a_swapped_comparison_reports_its_position_consistency():
    first = CompareResult(task="t2i", ok=True, winner="A")
    second = CompareResult(task="t2i", ok=True, winner="B")
    res = CompareResult(task="t2i", ok=True, winner="tie", orders=[first, second],
                        scores_a={"text_faithfulness": 3.0, "physical_quality": 3.0, "text_rendering": None},
                        scores_b={"text_faithfulness": 3.0, "physical_quality": 2.0, "text_rendering": None},
                        position_consistent=False)
    page = compare_html(res)
    assert "inconsistent" in page and "A shown first: Image A; B shown first: Image B" in page
    assert "<tr data-dim='physical_quality'><td>Physical and Visual Quality</td><td data-rr='a'>3.00</td>" in page


def test_a_browsed_item_labels_each_image_under_it_and_escapes_the_request(tmp_path):
    item = RunItem(id="x<1>", prompt=HOSTILE, verdict="wrong", images=[ImageRef("image A", str(tmp_path / "gone.png"))])
    page = run_item_html(item)
    assert "&lt;img src=x" in page and "x&lt;1&gt;" in page
    assert "<figcaption>image A</figcaption>" in page and "image unavailable" in page


# -- reading run folders ----------------------------------------------------------------------------------
def test_an_eval_run_reads_verdicts_filters_wrong_pairs_and_reopens_its_images(runs):
    run = open_run(runs["eval"])
    assert run.kind == "eval" and len(run.items) == 4
    assert [i.id for i in run.filter(show="wrong")] == ["people-disagree"]
    assert [i.id for i in run.filter(category="edit")] == ["edit-pair"]
    edit = run.filter(category="edit")
    assert run.images_for(edit) is None
    assert [im.caption for im in edit[0].images] == ["source", "image A", "image B"]


def test_a_refine_batch_shows_sources_round_zero_final_and_best_of_n(runs):
    run = open_run(runs["refine"])
    by_id = {i.id: i for i in run.items}
    captions = [im.caption for im in by_id["edit-item"].images]
    assert captions[0] == "source" and captions[1].startswith("round 0 best")
    assert any(c.startswith("best-of-") for c in captions)
    assert by_id["t2i-item"].verdict.endswith("improved over round 0")


def test_a_curate_run_splits_kept_and_rejected_with_the_rejecting_check(runs):
    run = open_run(runs["curate"])
    rejected = run.filter(show="wrong")
    assert sorted(i.id for i in rejected) == ["edit-unchanged", "flawed"]
    assert {i.reason for i in rejected} == {"min_reward"}
    assert run.reasons() == ["min_reward"]


def test_a_parent_folder_lists_its_runs_and_an_empty_one_says_what_was_looked_for(runs, tmp_path):
    kinds = sorted(k for k, _ in find_runs(runs["eval"].parent))
    assert kinds == ["curate", "eval", "refine"]
    with pytest.raises(RunFolderError, match=r"results.jsonl \+ config.json"):
        find_runs(tmp_path)
    with pytest.raises(RunFolderError, match="not a folder"):
        find_runs(tmp_path / "missing")


# -- serving --------------------------------------------------------------------------------------------
def test_the_app_is_a_plain_blocks_object_built_without_launching():
    import gradio as gr

    from rationalrewards.ui import build_app

    assert isinstance(build_app(ui_fixtures.judge()), gr.Blocks)


def _login(url: str, password: str) -> int:
    data = urllib.parse.urlencode({"username": "anyone", "password": password}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "login", data=data), timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_with_a_token_the_ui_asks_for_it_as_the_password():
    from rationalrewards.ui import build_app

    with served(build_app(ui_fixtures.judge()), token="s3cret") as url:
        assert _login(url, "wrong") == 400
        assert _login(url, "s3cret") == 200


def test_cli_refuses_a_public_address_without_a_token_and_needs_one_judge():
    from rationalrewards.ui.__main__ import app

    runner = CliRunner()
    out = runner.invoke(app, ["--demo", "--host", "0.0.0.0"])
    assert out.exit_code == 2 and "without a token" in out.output
    out = runner.invoke(app, [])
    assert out.exit_code == 2 and "--demo" in out.output
    out = runner.invoke(app, ["--demo", "--model", "x"])
    assert out.exit_code == 2 and "not both" in out.output


def test_browser_tests_skip_without_chromium_but_fail_under_ci(monkeypatch, tmp_path):
    from browser_support import open_browser

    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium, no chromedriver here
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="browser-setup"):
        next(open_browser())
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        next(open_browser())
