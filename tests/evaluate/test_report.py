"""report.html in a real headless browser: Debian's Chromium driven by Playwright.

Playwright cannot download its own browser here, so it drives the system's Chromium
(``/usr/bin/chromium``). When it is missing and the tests run as root with apt-get (as
CI does on a fresh Debian machine), the fixture installs the ``chromium`` package once;
otherwise the test fails saying how to install it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from nsa.evaluate.calibration import thresholds
from nsa.evaluate.decisions import Decision
from nsa.evaluate.report import ReportRow, thumbnail, write_report

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def _find_chromium() -> str | None:
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a Chromium executable, installing Debian's package when root can."""
    found = _find_chromium()
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "chromium"]):
            done = subprocess.run(command, env=env, capture_output=True, text=True,
                                  timeout=900, check=False)
            if done.returncode != 0:
                pytest.fail(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
        found = _find_chromium()
    if not found:
        pytest.fail("the report test needs Chromium: `apt-get install chromium` (as root)")
    return found


def _rows(n: int) -> list[ReportRow]:
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = int(i % 3 == 0)
        score = float(rng.random())
        anomalous = score > 0.5
        image = rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)
        rows.append(ReportRow(f"img{i:02d}.png", "scratch" if label else "good", label, score,
                              Decision(score / (score + 0.5), anomalous, 7 * i, None),
                              thumbnail(image, np.full((32, 32), score, np.float32))))
    return rows


def test_report_loads_without_errors_sorts_filters_and_is_screenshotted(
    chromium: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    calibration = {"image_threshold": 0.5, "pixel_threshold": 0.7, "n_images": 120,
                   "max_fpr": 0.01, "good": "test images",
                   "guarantee": {"marginal_fpr_bound": 0.0083, "confidence": 0.95,
                                 "fpr_upper_bound": 0.024}}
    rows = _rows(12)
    page_path = write_report(
        tmp_path / "report.html", title="test report", subtitle="twelve images", rows=rows,
        limits=thresholds(calibration), metrics=[("image AUROC", "90.0")],
        provenance={"model_run": "/runs/x", "versions": {"numpy": "2"}},
    )
    text = page_path.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained

    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium,
                                             args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(page_path.as_uri())

        def column(key: str) -> list[str]:
            return page.eval_on_selector_all(
                "#images tbody tr:not([hidden])", f"rs => rs.map(r => r.dataset.{key})")

        # worst first: false alarms (score descending) open the table
        outcomes = column("outcome")
        false_alarms = [r for r in rows if r.label == 0 and r.decision.anomalous]
        assert outcomes[: len(false_alarms)] == ["false alarm"] * len(false_alarms)
        page.click("th[data-key=score]")
        scores = [float(s) for s in column("score")]
        assert scores == sorted(scores)
        page.click("th[data-key=score]")
        scores = [float(s) for s in column("score")]
        assert scores == sorted(scores, reverse=True)
        page.select_option("#filter-defect", "scratch")
        assert set(column("defect")) == {"scratch"} and len(column("defect")) == 4
        page.select_option("#filter-decision", "anomalous")
        assert set(column("decision")) == {"anomalous"}
        assert page.inner_text("#shown").endswith(f"of {len(rows)} shown")
        page.select_option("#filter-defect", "")
        page.select_option("#filter-decision", "")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert problems == []
    assert (tmp_path / "report.png").stat().st_size > 10_000
