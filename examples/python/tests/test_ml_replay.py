"""A Python dashboard that starts late replays the model outputs stored in contoso_vision_outputs
(`entra_nats.ml.replay`, nats-py) through a consumer of its own naming, against a real nats-server
through the real callout; another tenant's job cannot create such a consumer."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid

import nats
import nats.errors
import pytest

from entra_nats.credentials import DevTokenCredential
from entra_nats.ml import PREFIX, ModelOutput, encode, output_subject, outputs_stream, replay

ANALYST_GROUP = "c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43"


def token(dev, *args: str) -> str:
    return DevTokenCredential(dev.token_command(*args)).get_token().token


def oid(jwt: str) -> str:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["oid"]


async def connect(dev, jwt: str, errors: list[str]) -> nats.NATS:
    async def on_error(e: Exception) -> None:
        errors.append(str(e))

    return await nats.connect(
        dev.nats_url, token=jwt, inbox_prefix=f"_INBOX.{oid(jwt)}", allow_reconnect=False,
        error_cb=on_error,
    )


async def wait_until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_a_late_dashboard_replays_the_stored_outputs_and_fabrikam_cannot(dev):
    asyncio.run(late_dashboard(dev))


async def late_dashboard(dev) -> None:
    # Other tests of the session publish outputs too: this one's model is its own, and the
    # replay filters on it (a filter inside the granted `contoso.vision.ml.outputs.>`).
    model = f"replay-{uuid.uuid4().hex[:8]}"
    subject = output_subject(PREFIX, model)
    sent = [ModelOutput(model, "2024-06-01", f"img-{n}", "cat", 0.5 + n / 10) for n in range(1, 4)]
    producer = await nats.connect(dev.nats_url, token=token(dev, "--role", "Ml.Vision.Producer"))
    for output in sent:
        await producer.publish(subject, encode(output))
    await producer.flush()
    await producer.close()

    errors: list[str] = []
    dashboard = await connect(dev, token(dev, "--group", ANALYST_GROUP), errors)
    js = dashboard.jetstream(timeout=2.0)

    async def stored() -> bool:
        info = await js.stream_info(outputs_stream(PREFIX), subjects_filter=subject)
        return (info.state.subjects or {}).get(subject) == len(sent)

    await wait_until(stored, f"the stream to hold {len(sent)} outputs on {subject}")
    replayed = await replay(js, PREFIX, f"py-dashboard-{uuid.uuid4().hex[:8]}", filter_subject=subject)
    assert [(m.subject, json.loads(m.data)) for m in replayed] == [
        (subject, json.loads(encode(o))) for o in sent
    ]
    assert errors == []
    await dashboard.close()

    # Fabrikam's job: the create request is refused by the server, so nats-py times out.
    errors = []
    fabrikam = await connect(dev, token(dev, "--tenant", "fabrikam", "--role", "Ml.Vision.Producer"), errors)
    with pytest.raises(nats.errors.TimeoutError):
        await replay(fabrikam.jetstream(timeout=1.0), PREFIX, "intruder")
    want = (
        'nats: permissions violation for publish to '
        '"$js.api.consumer.create.contoso_vision_outputs.intruder.contoso.vision.ml.outputs.>"'
    )

    async def refused() -> bool:
        return want in errors

    await wait_until(refused, f"{want!r} among {errors}")
    await fabrikam.close()
