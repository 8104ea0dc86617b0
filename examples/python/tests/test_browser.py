"""The browser dashboard (examples/browser) in a real headless Chromium against `entra-callout dev`:
it connects over WebSocket with a token from dev's DEV-ONLY token endpoint, shows a model output
the Python publisher sends, and shows a refusal for a token of another tenant."""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import pathlib
import subprocess
import sys
import threading
from urllib.parse import urlencode

from chromium import Chromium

BROWSER = pathlib.Path(__file__).resolve().parents[2] / "browser"
WALLBOARDS = "7e4b1f2a-9c3d-4e5f-8a6b-1c2d3e4f5a6b"
STATE = "document.getElementById('status').dataset.state"
TEXT = "document.getElementById('status').textContent"
INPUTS = "[...document.querySelectorAll('#outputs tr')].map(r => r.dataset.inputId)"


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve_page() -> tuple[http.server.ThreadingHTTPServer, str]:
    assert (BROWSER / "node_modules/nats.ws/esm/nats.js").exists(), \
        "run `npm ci` in examples/browser (scripts/install-js-test-deps does)"
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(BROWSER)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_the_dashboard_shows_a_published_output_and_refuses_another_tenant(dev, tmp_path):
    server, base = serve_page()

    def page_url(**token_params: str) -> str:
        endpoint = f"{dev.issuer_url}/dev-only/token?{urlencode(token_params)}"
        return f"{base}/index.html?{urlencode({'ws': dev.ws_url, 'token_endpoint': endpoint})}"

    async def main() -> None:
        chrome = Chromium()
        try:
            # A wallboard user: admitted over WebSocket only (policies/ml-events.yaml).
            page = await chrome.open(page_url(group=WALLBOARDS))
            await page.wait_for(f"{STATE} === 'connected'", "the dashboard to connect")
            publisher = subprocess.run(
                [sys.executable, "-m", "entra_nats.publisher", "--count", "3", "--interval", "0.2"],
                env=dict(os.environ, NATS_URL=dev.nats_url, ENTRA_NATS_CREDENTIAL="dev",
                         NATS_TOKEN_COMMAND=dev.token_command("--role", "Ml.Vision.Producer")),
                cwd=pathlib.Path(__file__).resolve().parents[1], capture_output=True, text=True,
                timeout=60,
            )
            assert publisher.returncode == 0, publisher.stderr
            await page.wait_for(f"{INPUTS}.includes('img-00003')", "the third output on the page")
            assert await page.eval(INPUTS) == ["img-00003", "img-00002", "img-00001"]
            await page.screenshot(tmp_path / "browser-dashboard.png")
            if os.environ.get("ENTRA_CALLOUT_SCREENSHOT_DIR"):
                await page.screenshot(
                    pathlib.Path(os.environ["ENTRA_CALLOUT_SCREENSHOT_DIR"]) / "browser-dashboard.png")

            # The same kind of user from another tenant: no binding admits it.
            other = await chrome.open(page_url(group=WALLBOARDS, tenant="fabrikam"))
            await other.wait_for(f"{STATE} === 'refused'", "the refusal")
            assert await other.eval(TEXT) == "refused: AUTHORIZATION_VIOLATION"
        finally:
            await chrome.close()
            server.shutdown()

    asyncio.run(main())
