"""`connection_types` in policies, against a real nats-server through the real callout: the
example binding `vision-browser-dashboards` (policies/ml-events.yaml) admits its group only over
WebSocket, so the same token is refused from a plain TCP client."""

from __future__ import annotations

import asyncio
import subprocess
import time

import nats
import pytest

WALLBOARDS = "7e4b1f2a-9c3d-4e5f-8a6b-1c2d3e4f5a6b"
SUBJECT = "contoso.vision.ml.outputs.resnet50"


def token(dev, *args: str) -> str:
    return subprocess.run(dev.token_command(*args).split(), capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_browser_only_identity_connects_over_websocket_and_receives_outputs(dev):
    async def main() -> None:
        browser = await nats.connect(dev.ws_url, token=token(dev, "--group", WALLBOARDS),
                                     allow_reconnect=False)
        sub = await browser.subscribe("contoso.vision.ml.outputs.>")
        await browser.flush()
        job = await nats.connect(dev.nats_url, token=token(dev, "--role", "Ml.Vision.Producer"))
        await job.publish(SUBJECT, b'{"label": "cat"}')
        await job.flush()
        msg = await sub.next_msg(timeout=10)
        assert (msg.subject, msg.data) == (SUBJECT, b'{"label": "cat"}')
        await job.close()
        await browser.close()

    asyncio.run(main())


def test_the_same_identity_is_refused_over_plain_tcp(dev):
    async def main() -> None:
        before = dev.output().count("client refused")
        with pytest.raises(nats.errors.Error, match=r"^nats: 'Authorization Violation'$"):
            await nats.connect(dev.nats_url, token=token(dev, "--group", WALLBOARDS),
                               allow_reconnect=False, max_reconnect_attempts=0)
        # The service's audit line says why: no binding admits this identity over TCP.
        deadline = time.monotonic() + 10
        while dev.output().count("client refused") == before:
            assert time.monotonic() < deadline, "no audit line for the refusal"
            await asyncio.sleep(0.05)
        refusal = [l for l in dev.output().splitlines() if "client refused" in l][-1]
        assert "no_matching_policy" in refusal, refusal

    asyncio.run(main())
