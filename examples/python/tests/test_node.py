"""The Node.js client (examples/node/ml-watch.mjs, @nats-io/transport-node with
tokenAuthenticator) against `entra-callout dev`: it crosses the expiry of 3-second tokens twice,
asking for a fresh token each time, and still receives outputs afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess

from entra_nats.client import RotatingClient
from entra_nats.credentials import DevTokenCredential

NODE = pathlib.Path(__file__).resolve().parents[2] / "node"
ANALYST_GROUP = "c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43"


def test_nats_js_token_authenticator_refreshes_across_expiry(dev):
    watcher = subprocess.Popen(
        ["node", "ml-watch.mjs", "--seconds", "9"], cwd=NODE, text=True, stdout=subprocess.PIPE,
        env=dict(os.environ, NATS_URL=dev.nats_url,
                 NATS_TOKEN_COMMAND=dev.token_command("--group", ANALYST_GROUP, "--ttl", "3s")),
    )
    try:
        assert json.loads(watcher.stdout.readline()) == {"ready": True}

        async def publish() -> None:
            job = RotatingClient(dev.nats_url, DevTokenCredential(dev.token_command("--role", "Ml.Vision.Producer")),
                                 "api://nats-auth/.default", name="job")
            await job.start()
            for step in range(40):
                await job.publish("contoso.vision.ml.outputs.resnet50", json.dumps({"step": step}).encode())
                await asyncio.sleep(0.25)
            await job.close()

        asyncio.run(publish())
        lines = [json.loads(line) for line in watcher.communicate(timeout=30)[0].splitlines()]
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0
    summary = lines[-2]["summary"]
    assert summary["closed"] is False
    assert summary["events"].get("reconnect", 0) >= 2, summary
    assert summary["tokens"] >= 3, summary
    expired = [l for l in lines if l.get("status") == "error"]
    assert {l["error"] for l in expired} == {"User Authentication Expired"}, expired
    # Outputs still arrive after the last reconnect.
    last_reconnect = max(i for i, l in enumerate(lines) if l.get("status") == "reconnect")
    assert any("msg" in l for l in lines[last_reconnect:]), lines
