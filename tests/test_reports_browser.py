"""Every stage's HTML report in a real browser, on a wide screen and on a phone.

The reports are built from small runs made through the stages' Python APIs (see ui_fixtures).
On both widths: the page declares a viewport, nothing makes the page wider than the screen
(wide tables scroll inside their own box), every image loads, and every image has a caption.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ui_fixtures
from browser_support import PHONE, WIDE, open_browser, page_metrics, screenshot, viewport, wait_for


@pytest.fixture(scope="module")
def browser() -> Any:
    yield from open_browser()


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    runs = ui_fixtures.all_runs(tmp_path_factory.mktemp("report-runs"))
    refine_items = sorted((runs["refine"] / "items").glob("*/report.html"))
    return {
        "eval": runs["eval"] / "report.html",
        "refine-batch": runs["refine"] / "report.html",
        **{f"refine-{p.parent.name}": p for p in refine_items},
        "curate": runs["curate"] / "report.html",
        "demo": ui_fixtures.demo_report(runs["eval"].parent, ui_fixtures.examples(runs["examples"])),
    }


def load(driver: Any, path: Path) -> dict[str, Any]:
    driver.get(path.resolve().as_uri())
    wait_for(lambda: driver.execute_script("return document.readyState") == "complete", what=f"{path} to load")

    def loaded() -> dict[str, Any] | None:
        m = page_metrics(driver)
        return None if m["broken"] else m

    try:
        return wait_for(loaded, timeout=10, what=f"every image of {path} to load")
    except AssertionError:
        raise AssertionError(f"images of {path} did not load: {page_metrics(driver)['broken']}") from None


def uncaptioned_images(driver: Any) -> list[str]:
    """Images that are neither inside a <figure> with a <figcaption> nor charts with alt text."""
    return driver.execute_script("""
        return [...document.images].filter(img => {
            const fig = img.closest('figure');
            return !(fig && fig.querySelector('figcaption') && fig.querySelector('figcaption').textContent.trim());
        }).map(img => img.alt || img.src.slice(0, 40));
    """)


@pytest.mark.parametrize("name", ["eval", "refine-batch", "refine-t2i-item", "refine-edit-item", "curate", "demo"])
@pytest.mark.parametrize("size", [WIDE, PHONE], ids=["1400px", "390px"])
def test_report_fits_the_screen_and_every_image_loads_with_a_caption(browser, reports, name, size):
    viewport(browser, size)
    m = load(browser, reports[name])
    assert m["viewportMeta"], "no <meta name=viewport>: phones lay the page out 980 px wide and shrink it"
    assert m["innerWidth"] == size[0]
    assert m["scrollWidth"] <= m["innerWidth"], f"page overflows sideways: {m}"
    assert m["images"] > 0
    assert uncaptioned_images(browser) == []
    screenshot(browser, f"report-{name}-{size[0]}")


def test_an_edit_refinement_report_shows_its_source(browser, reports):
    viewport(browser, WIDE)
    load(browser, reports["refine-edit-item"])
    captions = [c.text for c in browser.find_elements("css selector", "figcaption")]
    assert any(c.startswith("source") for c in captions), captions


def test_the_batch_refine_report_shows_sources_of_edits_and_explains_its_numbers(browser, reports):
    viewport(browser, WIDE)
    load(browser, reports["refine-batch"])
    captions = [c.text for c in browser.find_elements("css selector", "figcaption")]
    assert any(c.startswith("source") for c in captions), captions
    assert all("reward" in c or c.startswith("source") for c in captions), captions


def test_the_curate_report_shows_an_edit_with_its_source(browser, reports):
    viewport(browser, WIDE)
    load(browser, reports["curate"])
    captions = [c.text for c in browser.find_elements("css selector", ".ex figcaption")]
    assert "source" in captions and any(c.startswith("rejected · reward") for c in captions), captions


def test_the_demo_report_shows_rejected_rationales_with_their_images_and_names_the_mean_loss(browser, reports):
    viewport(browser, PHONE)
    load(browser, reports["demo"])
    body = browser.find_element("css selector", "body").text
    assert "mean training loss over all steps 0.225" in body and "final loss" not in body
    rejected = browser.find_elements("xpath", "//p[contains(., 'rejected (repredict_wrong)')]/following-sibling::div[1]")
    assert rejected and [c.text for c in rejected[0].find_elements("css selector", "figcaption")] == [
        "source", "image A", "image B"]
