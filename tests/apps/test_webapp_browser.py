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


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """One `edgescene app` process for the module's tests (a start costs ~8 s on 2 cores)."""
    with webapp(tmp_path_factory.mktemp("app")) as url:
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


def _options(page, elem_id: str) -> list[str]:
    """The choices of the Gradio dropdown ``#elem_id``, as its list shows them."""
    page.locator(f"#{elem_id} input").click()
    options = page.locator(f"#{elem_id} [role=option]")
    options.first.wait_for()
    names = [o.get_attribute("aria-label") or "" for o in options.all()]
    page.keyboard.press("Escape")
    return names


def test_the_app_opens_on_reconstruction_and_lists_what_was_added_without_a_restart(app_url, page):
    from edgescene.assets import default_model_dir

    ARTIFACTS.joinpath("browser").mkdir(parents=True, exist_ok=True)
    page.set_default_timeout(120_000)
    page.goto(app_url, wait_until="load")
    tab = page.get_by_role("tab", name="3D reconstruction")
    tab.wait_for()
    assert tab.get_attribute("aria-selected") == "true"  # the working path first, not an empty setup tab
    page.locator("#recon-sample").click()  # one click: the bundled sample with the bundled model
    page.locator("#recon-status").get_by_text("keyframes").wait_for()
    assert "Error" not in page.locator("#recon-status").inner_text()

    page.get_by_role("tab", name="Model setup").click()
    inventory = page.locator("#setup-inventory")
    inventory.get_by_text("Checkpoints:").wait_for()
    assert "none yet" in inventory.inner_text()
    page.locator("#setup-upload input[type=file]").set_input_files(str(default_model_dir() / "model.safetensors"))
    page.locator("#setup-add").click()
    page.locator("#setup-status").get_by_text("Added model.safetensors").wait_for()
    inventory.get_by_text("Checkpoints (1): model.safetensors").wait_for()

    page.get_by_role("tab", name="Export").click()
    assert "checkpoint: model.safetensors" in _options(page, "export-source")  # no "Refresh list" needed
    page.get_by_role("tab", name="Train VGGT").click()
    assert "model.safetensors" in _options(page, "train-vggt-init")
    page.get_by_role("tab", name="3D reconstruction").click()
    assert "checkpoint: model.safetensors" in _options(page, "recon-model")
    page.reload(wait_until="load")  # and after a reload, as before a restart
    page.get_by_role("tab", name="3D reconstruction").wait_for()
    assert "checkpoint: model.safetensors" in _options(page, "recon-model")
    page.screenshot(path=str(ARTIFACTS / "browser" / "live_catalogue.png"), full_page=True)
