"""The UI in a real browser: upload, judge and read the page, as a user would.

The judge is the demo world's scripted teacher without noise, so every score on the page is the
world's truth for that image and can be asserted exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import ui_fixtures
from browser_support import PHONE, WIDE, open_browser, page_metrics, screenshot, served, viewport, wait_for

pytest.importorskip("gradio")
# Gradio's queue calls pandas APIs that pandas 3 deprecates; not ours to fix.
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]


@pytest.fixture(scope="module")
def browser() -> Any:
    yield from open_browser()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return ui_fixtures.all_runs(tmp_path_factory.mktemp("ui-runs"))


@pytest.fixture(scope="module")
def ui_url(runs: dict[str, Path]) -> Any:
    from rationalrewards.ui import build_app
    from rationalrewards.ui.samples import write_examples

    model = ui_fixtures.judge()
    app = build_app(model, examples=write_examples(runs["examples"]))
    with served(app) as url:
        yield url
    model.close()


def css(driver: Any, selector: str) -> Any:
    return driver.find_element("css selector", selector)


def text_of(driver: Any, selector: str) -> str:
    return css(driver, selector).text.strip()


def open_tab(driver: Any, url: str, name: str) -> None:
    driver.get(url)
    tab = wait_for(lambda: [b for b in driver.find_elements("css selector", "button[role=tab]") if b.text.strip() == name],
                   what=f"the {name!r} tab")[0]
    tab.click()


def upload(driver: Any, component: str, *paths: Path) -> None:
    """Send files to a Gradio upload component and wait until it shows them."""
    field = wait_for(lambda: driver.find_elements("css selector", f"#{component} input[type=file]"),
                     what=f"the upload field of #{component}")[0]
    field.send_keys("\n".join(str(p) for p in paths))
    wait_for(lambda: driver.find_elements("css selector", f"#{component} img")
             or all(p.stem in text_of(driver, f"#{component}") for p in paths), what=f"#{component} to show the upload")


def choose(driver: Any, component: str, label: str) -> None:
    option = wait_for(lambda: [lab for lab in driver.find_elements("css selector", f"#{component} label")
                               if lab.text.strip() == label], what=f"option {label!r} of #{component}")[0]
    option.click()


def type_into(driver: Any, component: str, text: str) -> None:
    box = css(driver, f"#{component} textarea, #{component} input[type=text]")
    box.clear()
    box.send_keys(text)


def result(driver: Any, component: str) -> Any:
    return wait_for(lambda: driver.find_elements(
        "css selector", f"#{component} [data-rr=critique], #{component} [data-rr=compare], #{component} [data-rr=error]"),
        timeout=60, what=f"a result in #{component}")[0]


def dim_score(driver: Any, key: str) -> str:
    return text_of(driver, f"#critique-result [data-dim={key}] [data-rr=score]")


def no_horizontal_overflow(driver: Any) -> None:
    m = page_metrics(driver)
    assert m["scrollWidth"] <= m["innerWidth"], m


def test_critique_of_an_uploaded_image_shows_each_dimension_its_reason_and_the_refined_request(browser, ui_url, runs):
    viewport(browser, WIDE)
    open_tab(browser, ui_url, "Critique")
    upload(browser, "critique-image", runs["examples"] / "t2i_flawed.png")
    type_into(browser, "critique-request", ui_fixtures.examples(runs["examples"]).t2i_request)
    css(browser, "#critique-run").click()
    card = result(browser, "critique-result")
    assert card.get_attribute("data-rr") == "critique"
    # Wrong colour, noise and a misspelled word: the world's true scores, one per dimension.
    assert dim_score(browser, "text_faithfulness") == "3.00 / 4"
    assert dim_score(browser, "physical_quality") == "2.50 / 4"
    assert dim_score(browser, "text_rendering") == "2.00 / 4"
    assert text_of(browser, "#critique-result [data-rr=reward]") == "0.500"
    assert "the word reads SNU, not SUN" in text_of(browser, "#critique-result [data-dim=text_rendering]")
    refined = wait_for(lambda: css(browser, "#critique-refined textarea").get_attribute("value"), what="refined request")
    assert "Spell the word exactly" in refined
    assert browser.find_elements("css selector", "#critique-refined button"), "no copy button by the refined request"
    # The raw text is there on demand.
    css(browser, "#critique-raw-panel .label-wrap, #critique-raw-panel button").click()
    raw = wait_for(lambda: css(browser, "#critique-raw textarea").get_attribute("value"), what="raw text")
    assert raw.startswith("# Detailed Judgement")
    screenshot(browser, "critique-1400")
    viewport(browser, PHONE)
    no_horizontal_overflow(browser)
    screenshot(browser, "critique-390")


def test_an_edit_is_judged_against_its_source_and_an_unrequested_dimension_reads_na(browser, ui_url, runs):
    viewport(browser, WIDE)
    ex = ui_fixtures.examples(runs["examples"])
    open_tab(browser, ui_url, "Critique")
    choose(browser, "critique-task", "edit")
    upload(browser, "critique-image", ex.edit_unchanged)
    upload(browser, "critique-sources", ex.edit_source)
    type_into(browser, "critique-request", ex.edit_request)
    css(browser, "#critique-run").click()
    result(browser, "critique-result")
    assert dim_score(browser, "text_faithfulness") == "1.50 / 4"  # the change was not made
    assert dim_score(browser, "image_faithfulness") == "4.00 / 4"
    assert dim_score(browser, "text_rendering") == "N/A"


def test_a_judge_failure_is_shown_as_a_failure_with_no_score(browser, ui_url, tmp_path):
    # A plain PNG is not an image of the demo world: its judge cannot see it and says so.
    foreign = tmp_path / "foreign.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(foreign)
    viewport(browser, WIDE)
    open_tab(browser, ui_url, "Critique")
    upload(browser, "critique-image", foreign)
    type_into(browser, "critique-request", "<b>a red square</b>")
    css(browser, "#critique-run").click()
    card = result(browser, "critique-result")
    assert card.get_attribute("data-rr") == "error" and card.get_attribute("data-kind") == "backend"
    assert "rr-scene" in card.text
    assert not browser.find_elements("css selector", "#critique-result [data-rr=reward]")
    assert css(browser, "#critique-refined textarea").get_attribute("value") == ""


def test_compare_in_both_orders_shows_per_dimension_scores_winner_and_consistency(browser, ui_url, runs):
    viewport(browser, WIDE)
    ex = ui_fixtures.examples(runs["examples"])
    open_tab(browser, ui_url, "Compare")
    upload(browser, "compare-a", ex.t2i_flawed)
    upload(browser, "compare-b", ex.t2i_good)
    type_into(browser, "compare-request", ex.t2i_request)
    assert css(browser, "#compare-swap input").is_selected()
    css(browser, "#compare-run").click()
    card = result(browser, "compare-result")
    assert card.get_attribute("data-rr") == "compare"
    assert text_of(browser, "#compare-result [data-rr=winner]") == "Image B"
    assert "consistent" in text_of(browser, "#compare-result [data-rr=consistency]")
    assert "inconsistent" not in text_of(browser, "#compare-result [data-rr=consistency]")
    assert text_of(browser, "#compare-result tr[data-dim=text_rendering] [data-rr=a]") == "2.00"
    assert text_of(browser, "#compare-result tr[data-dim=text_rendering] [data-rr=b]") == "4.00"
    screenshot(browser, "compare-1400")
    viewport(browser, PHONE)
    no_horizontal_overflow(browser)
    screenshot(browser, "compare-390")


def items_on_page(driver: Any) -> list[str]:
    return [el.get_attribute("data-id") for el in driver.find_elements("css selector", "#browse-items [data-rr=item]")]


def test_browse_an_eval_run_pages_its_items_with_images_and_filters_the_wrong_ones(browser, ui_url, runs):
    viewport(browser, WIDE)
    open_tab(browser, ui_url, "Browse a run")
    type_into(browser, "browse-folder", str(runs["eval"]))
    css(browser, "#browse-open").click()
    wait_for(lambda: len(items_on_page(browser)) == 4, what="the eval run's four items")
    assert "accuracy 75.0%" in text_of(browser, "#browse-items [data-rr=page]")
    wait_for(lambda: (m := page_metrics(browser))["images"] >= 8 and not m["broken"], what="every image to load")
    captions = [c.text for c in browser.find_elements("css selector", "#browse-items figcaption")]
    assert {"image A", "image B", "source"} <= set(captions)
    choose(browser, "browse-show", "wrong, rejected or not improved")
    wait_for(lambda: items_on_page(browser) == ["people-disagree"], what="only the pair the judge got wrong")
    screenshot(browser, "browse-1400")
    viewport(browser, PHONE)
    no_horizontal_overflow(browser)
    screenshot(browser, "browse-390")


def test_browse_a_parent_folder_lists_every_run_in_it(browser, ui_url, runs):
    viewport(browser, WIDE)
    open_tab(browser, ui_url, "Browse a run")
    type_into(browser, "browse-folder", str(runs["eval"].parent))
    css(browser, "#browse-open").click()
    # The first run found (curate) opens: two kept, two rejected.
    wait_for(lambda: len(items_on_page(browser)) == 4, what="the first run's items")
    assert "curate run" in text_of(browser, "#browse-items [data-rr=page]")
    css(browser, "#browse-run input").click()
    options = wait_for(lambda: [o.text for o in browser.find_elements("css selector", "ul[role=listbox] li")],
                       what="the run list")
    assert any(o.startswith("eval") for o in options) and any(o.startswith("refine") for o in options)


def test_with_the_demo_judge_a_clicked_example_fills_the_form_and_is_judged(browser, ui_url):
    viewport(browser, WIDE)
    open_tab(browser, ui_url, "Critique")
    # The third example is the edit whose requested change was not made.
    rows = wait_for(lambda: [r for r in browser.find_elements("css selector", "table tbody tr") if r.is_displayed()],
                    what="the demo examples")
    rows[2].click()
    wait_for(lambda: css(browser, "#critique-request textarea").get_attribute("value") == "Turn the blue circle red",
             what="the example's request in the form")
    wait_for(lambda: "edit_source" in text_of(browser, "#critique-sources"), what="the example's source image")
    css(browser, "#critique-run").click()
    result(browser, "critique-result")
    assert dim_score(browser, "text_faithfulness") == "1.50 / 4"
    assert dim_score(browser, "image_faithfulness") == "4.00 / 4"
