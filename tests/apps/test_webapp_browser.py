"""The Gradio app in a real browser: Debian's Chromium driven by Playwright (no browser download).

Starts ``edgescene app`` as a user would, opens it, reconstructs the bundled sample video in the
3D reconstruction tab, waits for the 3D viewer's canvas, changes a display control (which must
re-render from the cached predictions, not run the model again) and saves screenshots under
``test-artifacts/browser/`` (or ``$EDGESCENE_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import pytest
from browser import ARTIFACTS, chromium_page
from webapp_server import webapp

from edgescene.assets import sample_dir

pytestmark = pytest.mark.browser


@pytest.fixture()
def app_url(tmp_path):
    with webapp(tmp_path) as url:
        yield url


@pytest.fixture()
def page():
    with chromium_page() as page:
        yield page


def test_reconstruct_sample_video_in_the_browser(app_url, page):
    ARTIFACTS.joinpath("browser").mkdir(parents=True, exist_ok=True)
    page.set_default_timeout(120_000)
    page.goto(app_url, wait_until="load")
    page.get_by_role("tab", name="3D reconstruction").wait_for()
    for tab in ("Model setup", "Train DINOv3", "Train VGGT", "Export", "3D reconstruction"):
        assert page.get_by_role("tab", name=tab).count() == 1, tab
    page.get_by_role("tab", name="3D reconstruction").click()

    page.locator("#recon-files input[type=file]").set_input_files(str(sample_dir() / "sample.mp4"))
    page.locator("#recon-files").get_by_text("sample.mp4").first.wait_for()
    page.locator("#recon-run").click()

    status = page.locator("#recon-status")
    status.get_by_text("model run and render").wait_for()
    page.locator("#recon-viewer canvas").wait_for(state="visible")
    text = status.inner_text()
    keyframes = int(text.split(" keyframes")[0].split()[-1])
    assert keyframes >= 8, text
    assert "Error" not in text
    page.wait_for_timeout(1500)  # let the viewer draw the points
    page.screenshot(path=str(ARTIFACTS / "browser" / "reconstruction.png"), full_page=True)
    assert page.locator("#recon-depth img").count() >= keyframes  # per-keyframe depth images

    # A display control re-renders from the cached predictions: no second model run.
    page.locator("#recon-cameras input[type=checkbox]").uncheck()
    status.get_by_text("re-rendered from cached predictions").wait_for()
    assert f"{keyframes} keyframes" in status.inner_text()
    page.locator("#recon-viewer canvas").wait_for(state="visible")
    page.wait_for_timeout(1000)
    page.screenshot(path=str(ARTIFACTS / "browser" / "reconstruction_no_cameras.png"), full_page=True)
    assert (ARTIFACTS / "browser" / "reconstruction.png").stat().st_size > 10_000
