"""The report page in a real browser: headless Chromium (Debian's chromium + chromium-driver) through Selenium.

Three real runs (passing, failing on one gate, quantized) are rendered at 1400 and 800 px wide: a card per runtime
is there and visible, failures first; the plots load; the page never scrolls sideways (its tables do); numbers do
not wrap. Screenshots go to ``$EDGESHIP_SCREENSHOTS`` (or the test's temporary folder). `.ci/run` installs the
browser when it is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import edgeship
from tests.conftest import load_report, tiny_recipe

WIDTHS = (1400, 800)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """Run directories of a passing, a failing and a quantized run of the same trained digits CNN."""
    root = tmp_path_factory.mktemp("reports")
    timing = {"latency.threads": 1, "latency.warmup": 2, "latency.runs": 10, "check.enabled": False}
    passing = edgeship.run(tiny_recipe(root, **timing), out=root / "passing")
    weights = str(root / "passing" / "stages" / "01-train" / "model.safetensors")
    trained = {**timing, "model.weights": weights, "export.formats": ["onnx", "tflite"]}
    failing = edgeship.run(tiny_recipe(root, **{**trained, "stages": [],  # agreement passes, the error gate fails
                                                "validate.gates.rel_max_err_max": 1e-12}), out=root / "failing")
    quantized = edgeship.run(tiny_recipe(root, **{**trained, "stages": [
        {"type": "quantize", "mode": "ptq", "weight_bits": 8, "act_bits": 8}],
        "validate.quantized_gates": {"float_agreement_min": 0.95}}), out=root / "quantized")  # 96 samples: 4 may flip
    assert (passing.status, failing.status, quantized.status) == ("pass", "fail", "pass")
    return {"passing": root / "passing", "failing": root / "failing", "quantized": root / "quantized"}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, ("the browser test needs Debian's chromium and chromium-driver "
                                      "(apt-get install chromium chromium-driver; .ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    yield driver
    driver.quit()


@pytest.mark.parametrize("name", ["passing", "failing", "quantized"])
def test_the_report_reads_at_a_glance_at_1400_and_800_px(reports, browser, name, tmp_path):
    from selenium.webdriver.common.by import By

    run_dir = reports[name]
    report = load_report(run_dir)
    shots = Path(os.environ.get("EDGESHIP_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        browser.set_window_size(width, 1100)
        browser.get((run_dir / "report.html").resolve().as_uri())
        viewport = browser.execute_script("return window.innerWidth")
        cards = browser.find_elements(By.CSS_SELECTOR, ".card")
        assert len(cards) == len(report["results"]) > 0
        for card in cards:  # every card on screen, none cut at the right edge
            assert card.is_displayed() and card.rect["x"] + card.rect["width"] <= viewport + 1
        statuses = [c.get_attribute("class").split()[1] for c in cards]
        assert statuses == sorted(statuses, key=lambda s: {"fail": 0, "pass": 1}.get(s, 2))  # failures first
        if name == "failing":
            assert statuses[0] == "fail" and "rel_max_err_max" in cards[0].find_element(By.CLASS_NAME, "reason").text
        wanted = ["plot-latency", "plot-agreement", "plot-hotspots"] + (["plot-training-1"] if name == "passing"
                                                                         else [])
        for ident in wanted:
            image = browser.find_element(By.CSS_SELECTOR, f"#{ident} img")
            assert image.is_displayed()
            assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 100
        # The page itself never scrolls sideways; wide tables scroll inside their own box.
        assert browser.execute_script("return document.documentElement.scrollWidth") <= viewport + 1
        cell = browser.find_element(By.CSS_SELECTOR, "table td")
        assert browser.execute_script("return getComputedStyle(arguments[0]).whiteSpace", cell) == "nowrap"
        assert browser.find_element(By.TAG_NAME, "footer").find_elements(By.TAG_NAME, "pre")  # the resolved recipe
        heading = next(h for h in browser.find_elements(By.TAG_NAME, "h2") if h.text.startswith("Hot spots"))
        assert heading.is_displayed()  # the slowest ops per timed row, each row's table under its own h3
        assert len(browser.find_elements(By.XPATH, "//h2[starts-with(., 'Hot spots')]/following-sibling::h3")) >= sum(
            1 for r in report["results"] if r.get("op_profile"))
        browser.save_screenshot(str(shots / f"report-{name}-{width}.png"))
    assert (shots / f"report-{name}-800.png").stat().st_size > 10_000
