"""The ML events scenario (policies/ml-events.yaml): subjects and payloads, as the Rust examples
(examples/ml-events/scenario.rs) write them, so Python and Rust clients read each other's events."""

from __future__ import annotations

import dataclasses
import json
import time

from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

# Tenant contoso, project vision: the callout grants nothing outside this prefix.
PREFIX = "contoso.vision"
# The outputs stream's local name in the policy; on the server, outputs_stream(prefix).
OUTPUTS_STREAM = "outputs"
# nats-server removes a replay consumer this long after its dashboard stopped pulling.
REPLAY_IDLE_S = 30.0


@dataclasses.dataclass
class ModelOutput:
    model: str
    version: str
    input_id: str
    label: str
    score: float


@dataclasses.dataclass
class Metric:
    job: str
    name: str
    step: int
    value: float


def output_subject(prefix: str, model: str) -> str:
    return f"{prefix}.ml.outputs.{model}"


def metric_subject(prefix: str, job: str, name: str) -> str:
    return f"{prefix}.ml.metrics.{job}.{name}"


def encode(event: ModelOutput | Metric) -> bytes:
    return json.dumps(dataclasses.asdict(event)).encode()


def outputs_stream(prefix: str) -> str:
    """The outputs stream's server name: the prefix with `.` as `_`, then `_outputs`."""
    return f"{prefix.replace('.', '_')}_{OUTPUTS_STREAM}"


async def replay(
    js: JetStreamContext, prefix: str, name: str, filter_subject: str = "", timeout: float = 10.0
) -> list[Msg]:
    """The outputs stored in the outputs stream, oldest first, through consumer `name`.

    The policy grants consumers of any name (`ephemeral`) but only with a filter inside
    `<prefix>.ml.outputs.>` (default: all of it), and only on the subject carrying name and
    filter, `$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`, which nats-py sends only when
    `name` is set. Nothing is acknowledged: a dashboard only looks. The connection must use the
    inbox prefix `_INBOX.<oid>`.
    """
    stream = outputs_stream(prefix)
    config = api.ConsumerConfig(
        name=name,
        filter_subject=filter_subject or f"{prefix}.ml.outputs.>",
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.NONE,
        inactive_threshold=REPLAY_IDLE_S,
    )
    info = await js.add_consumer(stream, config)
    sub = await js.pull_subscribe_bind(name, stream=stream)
    stored = info.num_pending or 0
    replayed: list[Msg] = []
    deadline = time.monotonic() + timeout
    try:
        while len(replayed) < stored:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"replayed {len(replayed)} of {stored} stored outputs within {timeout}s")
            replayed += await sub.fetch(stored - len(replayed), timeout=min(left, 2.0))
    finally:
        await sub.unsubscribe()
    return replayed
