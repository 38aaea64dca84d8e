"""Real-browser test support: Debian's Chromium driven by Selenium, and a served Gradio app.

A test module makes its fixture from :func:`open_browser`::

    @pytest.fixture(scope="module")
    def browser():
        yield from open_browser()

Without Chromium the browser tests skip with the reason, unless ``CI`` is set: on CI a missing
browser is a failure (run ``.ci/browser-setup`` first). ``RATIONALREWARDS_SCREENSHOTS=DIR`` makes
the tests that take screenshots write them to ``DIR`` (``docs/screenshots`` in the repository).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

WIDE = (1400, 900)
PHONE = (390, 844)
SCREENSHOTS_ENV = "RATIONALREWARDS_SCREENSHOTS"


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find_chromium() -> tuple[str, str] | None:
    """``(browser, driver)`` executables, or None when either is missing."""
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def open_browser() -> Iterator[Any]:
    """A headless Chromium for a fixture to yield; tests set the viewport with :func:`viewport`."""
    found = find_chromium()
    if found is None:
        if _ci():
            pytest.fail("CI is set but Chromium or chromedriver is missing: run .ci/browser-setup")
        pytest.skip("Chromium and chromedriver are not installed (run .ci/browser-setup); "
                    "with CI=true this is a failure instead")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ModuleNotFoundError:
        if _ci():
            pytest.fail("CI is set but selenium is not installed (pip install -e '.[dev]')")
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")

    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--disable-extensions", "--no-first-run", f"--window-size={WIDE[0]},{WIDE[1]}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(found[1]), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def viewport(driver: Any, size: tuple[int, int]) -> None:
    """Lay pages out as a screen of ``size`` CSS pixels; narrow sizes emulate a phone, so a page
    without a viewport meta tag is laid out 980 px wide and shrunk, as on a real phone."""
    width, height = size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as exc:  # the page is still changing under us: try again
            value, last_exc = None, exc
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}"
                         + (f" (last error: {last_exc})" if last_exc else ""))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    def up() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status < 500
        except urllib.error.HTTPError as exc:
            return exc.code < 500
        except OSError:
            return False

    wait_for(up, timeout, f"{url} to answer")


@contextmanager
def served(app: Any, token: str | None = None) -> Iterator[str]:
    """Launch a Gradio app from :func:`rationalrewards.ui.build_app` on a free loopback port."""
    from rationalrewards.ui import launch

    port = free_port()
    launch(app, host="127.0.0.1", port=port, token=token, block=False, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url)
        yield url
    finally:
        app.close()


def page_metrics(driver: Any) -> dict[str, Any]:
    """Layout facts a test checks: page width vs the viewport, images that did not load."""
    return driver.execute_script("""
        const d = document.documentElement;
        const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))
                                           .map(i => i.alt || i.src.slice(0, 60));
        return {scrollWidth: d.scrollWidth, innerWidth: window.innerWidth, images: document.images.length,
                broken: broken,
                viewportMeta: !!document.querySelector('meta[name=viewport]')};
    """)


def screenshot(driver: Any, name: str) -> Path | None:
    """Save a full-page PNG as ``$RATIONALREWARDS_SCREENSHOTS/name.png`` (when set), as a
    256-colour PNG to keep the repository small."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if not folder:
        return None
    import base64

    from PIL import Image

    metrics = driver.execute_script(
        "return {w: document.documentElement.clientWidth, h: Math.min(document.documentElement.scrollHeight, 4000)}")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": metrics["w"], "height": metrics["h"], "scale": 1}})
    img = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path
