"""An Azure ML-style job: publishes model outputs and a training metric for contoso.vision.

    ENTRA_NATS_CREDENTIAL=dev NATS_TOKEN_COMMAND="entra-callout dev token --role Ml.Vision.Producer" \\
      python -m entra_nats.publisher --count 20

In an Azure ML job, leave ENTRA_NATS_CREDENTIAL unset: DefaultAzureCredential uses the compute's
managed identity. Prints one JSON line per event, with its Nats-Msg-Id; exits non-zero when a
message could not be handed to nats-server (the outbox is never dropped silently).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from .client import UndeliveredError, connect_from_env
from .ml import PREFIX, Metric, ModelOutput, encode, metric_subject, output_subject


async def run(args: argparse.Namespace) -> int:
    async def on_error(e: Exception) -> None:
        # Permission violations are reported here: nats-server drops the message.
        print(json.dumps({"error": str(e)}), flush=True)

    client = await connect_from_env("ml-publisher-py", on_error=on_error)
    step = 0
    try:
        while args.count == 0 or step < args.count:
            step += 1
            output = ModelOutput(
                model=args.model,
                version="2024-06-01",
                input_id=f"img-{step:05}",
                label="cat" if step % 3 == 0 else "dog",
                score=0.5 + (step % 5) / 10,
            )
            metric = Metric(job=args.job, name="loss", step=step, value=1.0 / step)
            out_id = await client.publish(output_subject(args.prefix, args.model), encode(output))
            met_id = await client.publish(metric_subject(args.prefix, args.job, "loss"), encode(metric))
            print(json.dumps({"published": output.input_id, "id": out_id, "metric_id": met_id}), flush=True)
            await asyncio.sleep(args.interval)
    finally:
        try:
            await client.close()
        except UndeliveredError as e:
            print(json.dumps({"error": str(e)}), flush=True)
            return 1
    print(
        json.dumps(
            {"done": step, "rotations": client.rotations, "replacements": client.replacements}
        ),
        flush=True,
    )
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=0, help="events to publish (0: until Ctrl-C)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between events")
    parser.add_argument("--prefix", default=PREFIX)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--job", default="job-17")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        sys.exit(asyncio.run(run(args)))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
