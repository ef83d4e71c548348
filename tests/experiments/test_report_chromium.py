"""The HTML report as a browser shows it: headless Chromium (Debian's ``chromium``
package; CI installs it and sets MLPKG_REQUIRE_CHROMIUM=1, so that the test fails there
without it; elsewhere it is skipped where there is none) renders a report
of real run records, takes a screenshot, and dumps the DOM it built. The screenshot must
not be blank and must show the plots (pixels of their colours where they are drawn); the
DOM must hold the figures' text. Chromium runs with a throwaway profile and HOME in the
test's directory, no network to reach (the page needs none), and a timeout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlpkg.experiments import plots
from mlpkg.experiments.report import render
from tests.experiments import report_docs as docs
from tests.experiments.records import DATA, ORT_NEW

WIDTH, HEIGHT = 1280, 2400
TIMEOUT_S = 120


def _chromium() -> str:
    """The chromium binary; where there is none, the test is skipped, or fails where
    MLPKG_REQUIRE_CHROMIUM=1 (CI, which installs it: a skip there would hide the check)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("MLPKG_REQUIRE_CHROMIUM") == "1":
        pytest.fail(
            "MLPKG_REQUIRE_CHROMIUM=1 but there is no chromium (or chromium-browser) binary "
            "on PATH: the report's browser test cannot run (Debian: apt-get install chromium)",
            pytrace=False,
        )
    pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")


def _browse(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Chromium, headless, on ``page`` with ``args``, in a profile of its own."""
    command = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--no-first-run", "--no-default-browser-check", "--disable-extensions",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
        f"--window-size={WIDTH},{HEIGHT}", *args, page.as_uri(),
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture
def report(tmp_path: Path) -> Path:
    machine = json.loads((DATA / f"{ORT_NEW}.result.json").read_text())["machine"]
    page = tmp_path / "report.html"
    page.write_text(render(docs.real_doc(), machine=machine), encoding="utf-8")
    return page


def _near(pixels: np.ndarray, colour: str, tolerance: int = 14) -> np.ndarray:
    """A mask of the pixels within ``tolerance`` (per channel) of ``colour`` (#rrggbb)."""
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return np.all(np.abs(pixels.astype(np.int16) - rgb) <= tolerance, axis=-1)


def _blend(colour: str, alpha: float) -> str:
    """``colour`` drawn with ``alpha`` over white, as #rrggbb."""
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(alpha * c + (1 - alpha) * 255):02x}" for c in rgb)


def test_the_report_renders_with_its_plots(tmp_path: Path, report: Path) -> None:
    shot = tmp_path / "report.png"
    _browse(tmp_path, report, f"--screenshot={shot}")
    image = Image.open(shot).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    pixels = np.asarray(image)
    # not blank: much of the page is drawn, in many colours
    not_white = np.any(pixels < 245, axis=-1)
    assert not_white.mean() > 0.04, f"only {not_white.mean():.1%} of the page is drawn"
    packed = (pixels[..., 0].astype(np.uint32) << 16) | (pixels[..., 1].astype(np.uint32) << 8)
    assert len(np.unique(packed | pixels[..., 2])) > 100  # distinct colours
    # the throughput plot: its bars (the first series colour, translucent) in the upper
    # half, where it stands below the table and the verdicts
    upper = pixels[: HEIGHT // 2]
    bars = _near(upper, _blend(plots.BLUE, 0.35), tolerance=8).sum()
    assert bars > 20_000, f"{bars} pixels of throughput bars"
    # the latency plot: solid bars in its three colours
    for colour in (plots.BLUE, plots.ORANGE, plots.GREEN):
        assert _near(pixels, colour).sum() > 5_000, colour
    # the failure's error box (red) further down
    assert _near(pixels, "#b00020").sum() > 200


def test_the_browser_dom_holds_the_figures(tmp_path: Path, report: Path) -> None:
    dom = _browse(tmp_path, report, "--dump-dom").stdout
    assert "<h1>Experiment exp-demo</h1>" in dom
    assert dom.count("<svg") == 2  # throughput and latency; the records have no mAP
    for text in ("57.2 (n=3)", "40.6 (n=3)", "p99 (ms)", "#3 onnxruntime=onnxruntime@1.22.1"):
        assert text in dom, text
    assert "std::bad_alloc" in dom and "1.17.3 → <b>1.22.1</b>" in dom
