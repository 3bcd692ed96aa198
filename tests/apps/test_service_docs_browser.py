"""The service's API docs in a real browser with no network: /docs (Swagger UI) and /redoc render
from assets the package installed, under the service's own CSP, with a token set (the pages are
public, the API they call is not, and Swagger offers Authorize). Screenshots go to
``test-artifacts/browser/`` (or ``$EDGESCENE_TEST_ARTIFACTS``)."""

from __future__ import annotations

import pytest
from browser import ARTIFACTS, chromium_page
from service_server import Server

pytestmark = pytest.mark.browser

TOKEN = "docs-token-0123456789abcdef"


def test_the_api_docs_render_offline_with_a_token_set(tmp_path):
    pytest.importorskip("httpx")
    ARTIFACTS.joinpath("browser").mkdir(parents=True, exist_ok=True)
    server = Server(tmp_path / "jobs", tmp_path / "server.log", token=TOKEN)
    foreign: list[str] = []
    try:
        with chromium_page() as page:
            page.set_default_timeout(60_000)

            def only_the_server(route):  # no network: anything not served by the server fails
                if route.request.url.startswith(server.url):
                    return route.continue_()
                foreign.append(route.request.url)
                return route.abort()

            page.route("**/*", only_the_server)
            page.goto(server.url + "/docs", wait_until="load")
            page.locator(".swagger-ui .info .title").get_by_text("edgescene").wait_for()
            page.locator(".swagger-ui .opblock").first.wait_for()  # the operations, from /openapi.json
            assert page.locator(".swagger-ui .opblock").count() >= 8
            assert page.get_by_role("button", name="Authorize").count() >= 1
            assert "press **Authorize**" not in page.content() and "Authorize" in page.content()
            page.screenshot(path=str(ARTIFACTS / "browser" / "service_docs.png"), full_page=False)

            page.goto(server.url + "/redoc", wait_until="load")
            page.get_by_role("heading", name="edgescene").first.wait_for()
            page.screenshot(path=str(ARTIFACTS / "browser" / "service_redoc.png"), full_page=False)
    finally:
        server.stop_cleanly(tmp_path / "server.log")
    assert all("fonts.googleapis.com" in url for url in foreign), foreign  # redoc's optional web font only
    assert (ARTIFACTS / "browser" / "service_docs.png").stat().st_size > 20_000
