"""The Python ML clients against a real nats-server through the real callout (`entra-callout dev`):
they cross the expiry of their minted credentials several times without losing a message, and
another tenant's publishes are refused."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from entra_nats.client import MSG_ID, RotatingClient
from entra_nats.credentials import (
    DevTokenCredential,
    credential_from_env,
    CredentialConfigError,
    jwt_expiry,
)
from entra_nats.ml import PREFIX, ModelOutput, encode, output_subject

SCOPE = "api://nats-auth/.default"
ANALYST_GROUP = "c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43"
# Short-lived dev tokens: minted credentials expire with them, several times per test.
TTL = "6s"


async def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def client(dev, name: str, *token_args: str, **kwargs) -> RotatingClient:
    credential = DevTokenCredential(dev.token_command(*token_args))
    return RotatingClient(dev.nats_url, credential, SCOPE, name=name, **kwargs)


async def collect(consumer: RotatingClient, subject: str) -> dict[str, bytes]:
    got: dict[str, bytes] = {}

    async def on_msg(msg) -> None:
        got[msg.headers[MSG_ID]] = msg.data

    await consumer.subscribe(subject, on_msg)
    return got


async def publish_across_expiries(publisher: RotatingClient, expiries: int, ttl_s: float) -> list[str]:
    """Publishes model outputs every 50 ms until `expiries` token lifetimes have passed."""
    ids = []
    step = 0
    end = time.monotonic() + expiries * ttl_s + 1.0
    while time.monotonic() < end:
        step += 1
        output = ModelOutput("resnet50", "2024-06-01", f"img-{step:05}", "dog", 0.9)
        ids.append(await publisher.publish(output_subject(PREFIX, "resnet50"), encode(output)))
        await asyncio.sleep(0.05)
    return ids


def test_publisher_and_dashboard_rotate_before_expiry_and_lose_nothing(dev):
    async def main() -> None:
        # A 2-second margin leaves a loaded CI machine time to rotate before nats-server cuts
        # the old connection off (the default, a fifth of 6 s, is tighter).
        dashboard = client(dev, "dashboard", "--group", ANALYST_GROUP, "--ttl", TTL, refresh_margin=2.0)
        publisher = client(dev, "job", "--role", "Ml.Vision.Producer", "--ttl", TTL, refresh_margin=2.0)
        await dashboard.start()
        got = await collect(dashboard, f"{PREFIX}.ml.outputs.>")
        await publisher.start()
        ids = await publish_across_expiries(publisher, expiries=3, ttl_s=6)
        await publisher.close()
        await wait_until(lambda: set(ids) <= set(got), f"all {len(ids)} messages at the dashboard")
        await dashboard.close()
        assert set(got) == set(ids)
        # Both replaced their connection before each expiry, never after a server close.
        assert publisher.rotations >= 2, publisher.rotations
        assert dashboard.rotations >= 2, dashboard.rotations
        assert publisher.replacements == 0 and dashboard.replacements == 0

    asyncio.run(main())


def test_publisher_survives_the_servers_expiry_disconnect(dev):
    """No proactive rotation: nats-server closes the publisher with 'User Authentication Expired'
    (nats-py would stay closed), the client reconnects with a fresh token and resends what the
    server had not confirmed."""

    async def main() -> None:
        dashboard = client(dev, "dashboard", "--group", ANALYST_GROUP, "--ttl", "10m")
        publisher = client(dev, "job", "--role", "Ml.Vision.Producer", "--ttl", "3s", rotate=False)
        await dashboard.start()
        got = await collect(dashboard, f"{PREFIX}.ml.outputs.>")
        await publisher.start()
        ids = await publish_across_expiries(publisher, expiries=3, ttl_s=3)
        await publisher.close()
        await wait_until(lambda: set(ids) <= set(got), f"all {len(ids)} messages at the dashboard")
        await dashboard.close()
        assert set(got) == set(ids)
        # nats-server cut it off at every expiry. nats-py either read the -ERR and closed for
        # good (then the client opened a new connection: a replacement) or saw the socket close
        # first and reconnected by itself through token_for_connect (a reconnect).
        counts = (publisher.disconnects, publisher.expired_closes, publisher.replacements, publisher.reconnects)
        assert publisher.disconnects >= 2, counts
        assert publisher.replacements + publisher.reconnects >= 2, counts
        assert publisher.rotations == 0
        print("disconnects, expired closes, replacements, nats-py reconnects:", counts)

    asyncio.run(main())


def test_another_tenants_publishes_are_refused(dev):
    async def main() -> None:
        errors: list[str] = []

        async def on_error(e: Exception) -> None:
            errors.append(str(e))

        dashboard = client(dev, "dashboard", "--group", ANALYST_GROUP)
        intruder = client(dev, "fabrikam-job", "--tenant", "fabrikam", "--role", "Ml.Vision.Producer",
                          on_error=on_error)
        contoso_job = client(dev, "job", "--role", "Ml.Vision.Producer")
        await dashboard.start()
        got = await collect(dashboard, f"{PREFIX}.ml.outputs.>")
        await intruder.start()
        await contoso_job.start()
        subject = output_subject(PREFIX, "resnet50")
        refused = await intruder.publish(subject, b'{"label": "forged"}')
        await intruder.flush_outbox()
        await wait_until(lambda: errors, "the permissions violation")
        assert errors == [f'nats: permissions violation for publish to "{subject}"'], errors
        # A marker published after the refused message arrives; the refused one never does.
        marker = await contoso_job.publish(subject, b'{"label": "marker"}')
        await wait_until(lambda: marker in got, "the marker")
        assert refused not in got
        # The other tenant's own namespace works.
        await intruder.publish(output_subject("fabrikam.vision", "resnet50"), b"{}")
        await intruder.flush_outbox()
        for c in (intruder, contoso_job, dashboard):
            await c.close()
        assert len(errors) == 1, errors

    asyncio.run(main())


def test_the_cli_programs_run_against_dev(dev, tmp_path):
    """`python -m entra_nats.publisher` / `.consumer`, configured only by environment variables."""
    env = dict(os.environ, NATS_URL=dev.nats_url, ENTRA_NATS_CREDENTIAL="dev")
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    consumer = subprocess.Popen(
        [sys.executable, "-m", "entra_nats.consumer", "--count", "10"],
        env=dict(env, NATS_TOKEN_COMMAND=dev.token_command("--group", ANALYST_GROUP, "--ttl", "4s")),
        cwd=cwd, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert json.loads(consumer.stdout.readline()) == {"ready": True}
        publisher = subprocess.run(
            [sys.executable, "-m", "entra_nats.publisher", "--count", "5", "--interval", "1"],
            env=dict(env, NATS_TOKEN_COMMAND=dev.token_command("--role", "Ml.Vision.Producer", "--ttl", "3s")),
            cwd=cwd, capture_output=True, text=True, timeout=60,
        )
        assert publisher.returncode == 0, publisher.stderr
        published = [json.loads(line) for line in publisher.stdout.splitlines()]
        assert published[-1]["done"] == 5
        lines = [json.loads(line) for line in consumer.communicate(timeout=30)[0].splitlines()]
        assert consumer.returncode == 0
        want = {p["id"] for p in published[:-1]} | {p["metric_id"] for p in published[:-1]}
        assert {line["id"] for line in lines} == want
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()


def test_the_credential_is_chosen_by_configuration(dev):
    dev_credential = credential_from_env({"ENTRA_NATS_CREDENTIAL": "dev",
                                          "NATS_TOKEN_COMMAND": dev.token_command("--ttl", "2m")})
    token = dev_credential.get_token(SCOPE)
    assert token.expires_on == jwt_expiry(token.token)
    assert 100 < token.expires_on - time.time() <= 120
    from azure.identity import DefaultAzureCredential

    assert isinstance(credential_from_env({}), DefaultAzureCredential)
    with pytest.raises(CredentialConfigError, match="ENTRA_NATS_CREDENTIAL=dev needs NATS_TOKEN_COMMAND"):
        credential_from_env({"ENTRA_NATS_CREDENTIAL": "dev"})
    with pytest.raises(CredentialConfigError, match="expected azure or dev"):
        credential_from_env({"ENTRA_NATS_CREDENTIAL": "vault"})
