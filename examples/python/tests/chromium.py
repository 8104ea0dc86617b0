"""Just enough of the Chrome DevTools protocol to drive a real headless Chromium from a test:
open a page, evaluate expressions in it, take a screenshot. No browser download: Debian's
chromium (CHROMIUM_BIN, default /usr/bin/chromium)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import pathlib
import subprocess
import tempfile
import time
from typing import Any

import aiohttp

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1000,560", "--remote-debugging-port=0", "--remote-allow-origins=*",
]


class Chromium:
    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="entra-callout-chromium-")
        binary = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.dir.name}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        active = pathlib.Path(self.dir.name, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while not (active.exists() and active.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{binary} did not start its DevTools endpoint")
            time.sleep(0.05)
        self.port = int(active.read_text().split()[0])
        self.session = aiohttp.ClientSession()

    async def open(self, url: str) -> "Page":
        async with self.session.put(f"http://127.0.0.1:{self.port}/json/new?about:blank") as r:
            target = await r.json()
        ws = await self.session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        await page.call("Page.navigate", url=url)
        return page

    async def close(self) -> None:
        await self.session.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.dir.cleanup()


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict:
        call_id = next(self.ids)
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == call_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def eval(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                seen = await self.eval("location.href + ' :: ' + document.body.innerText")
                raise AssertionError(f"timed out waiting for {what}; the page shows: {seen}")
            await asyncio.sleep(0.1)

    async def screenshot(self, path: pathlib.Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))
