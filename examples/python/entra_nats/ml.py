"""The ML events scenario (policies/ml-events.yaml): subjects and payloads, as the Rust examples
(examples/ml-events/scenario.rs) write them, so Python and Rust clients read each other's events."""

from __future__ import annotations

import dataclasses
import json

# Tenant contoso, project vision: the callout grants nothing outside this prefix.
PREFIX = "contoso.vision"


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
