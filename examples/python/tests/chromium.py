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
import shutil
import signal
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
        self.dir = tempfile.mkdtemp(prefix="entra-callout-chromium-")
        binary = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
        # Its own process group: Chromium's helpers (zygote, renderers, crash handler) outlive
        # the main process by a moment and keep writing into the profile directory.
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.dir}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        active = pathlib.Path(self.dir, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while not (active.exists() and active.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._signal(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                shutil.rmtree(self.dir, ignore_errors=True)
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
        """Stops Chromium and every helper it started, then removes its profile directory."""
        await self.session.close()
        group = self.proc.pid
        self._signal(group, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._signal(group, signal.SIGKILL)
        self.proc.wait()
        # Helpers are reaped by init, not by us: wait until none of the group is left.
        deadline = time.monotonic() + 10
        while self._signal(group, 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # A helper that left the group may still be writing the profile for a moment.
        for _ in range(50):
            try:
                shutil.rmtree(self.dir)
                break
            except FileNotFoundError:
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            shutil.rmtree(self.dir)

    @staticmethod
    def _signal(group: int, sig: int) -> bool:
        """Sends `sig` to the process group; whether any process of it was left to receive it."""
        try:
            os.killpg(group, sig)
            return True
        except ProcessLookupError:
            return False


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
