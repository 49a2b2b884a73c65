"""Every demo's report.html opened in headless Chromium, as a person opens it (slow: runs every demo).

The test skips when Chromium, its driver or selenium is missing (``apt-get install chromium
chromium-driver``; ``pip install selenium``). ``MEDLEARN_DEMO_RUNS=DIR`` points it at the output of
an earlier ``medlearn demo --out DIR`` instead of running the demos again; ``MEDLEARN_SCREENSHOTS=DIR``
keeps the screenshots (one PNG per report) there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")

#: what the page must satisfy, evaluated in the browser after load
CHECKS_JS = """
const wide = [...document.querySelectorAll('p, h1, h2, h3, figcaption, li, td, th, small, a')]
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
  .map(e => e.tagName + ': ' + e.textContent.slice(0, 60));
const imgs = [...document.images];
return {
  broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
  external: imgs.filter(i => !i.src.startsWith('data:')).map(i => i.src),
  uncaptioned: imgs.filter(i => !(i.closest('figure') && i.closest('figure').querySelector('figcaption')
                                   && i.closest('figure').querySelector('figcaption').textContent.trim()))
                   .map(i => i.alt),
  unlabelled: imgs.filter(i => i.dataset.unlabelledAxes).map(i => i.alt + ' ' + i.dataset.unlabelledAxes),
  page_wider_than_window: document.documentElement.scrollWidth > window.innerWidth + 1,
  overflowing_text: wide,
  figures: imgs.length,
};
"""


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory) -> Path:
    given = os.environ.get("MEDLEARN_DEMO_RUNS")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("demo")
    subprocess.run([sys.executable, "-m", "medlearn.cli", "demo", "--out", str(out), "--overwrite"], check=True)
    return out


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (CHROMIUM and DRIVER):
        pytest.skip("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1366,900", "--no-first-run",
                "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def test_every_demo_report_reads_in_a_browser(demo_runs: Path, browser, tmp_path: Path) -> None:
    reports = sorted(demo_runs.rglob("report.html"))
    assert reports, f"no report.html under {demo_runs}"
    shots = Path(os.environ.get("MEDLEARN_SCREENSHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    problems: dict[str, dict] = {}
    for report in reports:
        browser.get(report.resolve().as_uri())
        found = browser.execute_script(CHECKS_JS)
        errors = [e["message"] for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1366, min(max(900, int(height)), 16000))
        name = report.relative_to(demo_runs).as_posix()
        browser.save_screenshot(str(shots / (name.replace("/", "__") + ".png")))
        browser.set_window_size(1366, 900)
        bad = {k: v for k, v in found.items() if k != "figures" and v}
        if errors:
            bad["console_errors"] = errors
        if bad:
            problems[name] = bad
    assert not problems, "reports that do not read well:\n" + json.dumps(problems, indent=1)
