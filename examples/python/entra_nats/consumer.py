"""A dashboard-style consumer: prints every model output and metric of contoso.vision.

    ENTRA_NATS_CREDENTIAL=dev \\
    NATS_TOKEN_COMMAND="entra-callout dev token --group c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43" \\
      python -m entra_nats.consumer

One JSON line per message: subject, Nats-Msg-Id and the event. Duplicates (a resend, the
overlap while the connection is replaced before its token expires) are filtered out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from nats.aio.msg import Msg

from .client import MSG_ID, connect_from_env
from .ml import PREFIX


async def run(args: argparse.Namespace) -> int:
    client = await connect_from_env("ml-consumer-py")
    received = 0
    done = asyncio.Event()

    async def show(msg: Msg) -> None:
        nonlocal received
        received += 1
        event = json.loads(msg.data)
        print(json.dumps({"subject": msg.subject, "id": (msg.headers or {}).get(MSG_ID), "event": event}), flush=True)
        if args.count and received >= args.count:
            done.set()

    await client.subscribe(f"{args.prefix}.ml.outputs.>", show)
    await client.subscribe(f"{args.prefix}.ml.metrics.>", show)
    print(json.dumps({"ready": True}), flush=True)
    try:
        await done.wait()
    finally:
        await client.close()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=0, help="exit after this many (0: never)")
    parser.add_argument("--prefix", default=PREFIX)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        sys.exit(asyncio.run(run(args)))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
