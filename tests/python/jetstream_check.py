"""JetStream grants through nats-py (the Python examples' pinned version), driven by tests/integration/jetstream.rs.

Usage: jetstream_check.py URL TOKEN OID. Connects as the contoso deployer of that test's
policy (streams and buckets already created out of band) and prints one JSON object: for each
step, "ok" or the exception's class name. The Rust test asserts the outcomes; this script
decides nothing.
"""

import asyncio
import json
import sys

import nats
from nats.js import api

STREAM = "contoso_web_image-ready"
OTHER = "fabrikam_web_image-ready"
FILTER = "contoso.web.deploy.image-ready.v1.>"
SUBJECT = "contoso.web.deploy.image-ready.v1.py"


async def main(url, token, oid):
    refused = []

    async def on_error(e):
        refused.append(str(e))

    nc = await nats.connect(
        url, token=token, inbox_prefix=f"_INBOX.{oid}", allow_reconnect=False, error_cb=on_error
    )
    js = nc.jetstream(timeout=1.0)
    out = {}

    async def step(name, coro):
        try:
            value = await coro
            out[name] = "ok" if value is None or value is True else value
        except Exception as e:  # the class name is the assertion
            out[name] = type(e).__name__

    async def stream_info():
        await js.stream_info(STREAM)

    async def publish_twice():
        first = await js.publish(SUBJECT, b"py", headers={"Nats-Msg-Id": "sha256:py"})
        second = await js.publish(SUBJECT, b"py", headers={"Nats-Msg-Id": "sha256:py"})
        return f"duplicate={bool(first.duplicate)},{bool(second.duplicate)}".lower()

    async def direct_get():
        msg = await js.get_last_msg(STREAM, SUBJECT, direct=True)
        return msg.data.decode()

    async def durable_by_name():
        # name = durable name: nats-py then sends CONSUMER.CREATE.<stream>.<name>.<filter>.
        config = api.ConsumerConfig(
            name="deployer", durable_name="deployer", filter_subject=FILTER,
            ack_policy=api.AckPolicy.EXPLICIT,
        )
        await js.add_consumer(STREAM, config)
        sub = await js.pull_subscribe_bind(durable="deployer", stream=STREAM)
        msgs = await sub.fetch(1, timeout=2)
        await msgs[0].ack_sync()
        return msgs[0].data.decode()

    async def durable_legacy():
        # durable_name alone: nats-py sends the legacy CONSUMER.DURABLE.CREATE form.
        config = api.ConsumerConfig(durable_name="deployer", filter_subject=FILTER)
        await js.add_consumer(STREAM, config)

    async def kv_put_get():
        kv = await js.key_value("contoso_web_config")
        await kv.put("release", b"py-1")
        entry = await kv.get("release")
        return entry.value.decode()

    async def kv_watch_helper():
        kv = await js.key_value("contoso_web_config")
        await kv.watch("release")

    async def other_stream_info():
        await js.stream_info(OTHER)

    async def other_bucket():
        await js.key_value("fabrikam_web_config")

    await step("stream_info", stream_info())
    await step("publish", publish_twice())
    await step("direct_get", direct_get())
    await step("durable_by_name", durable_by_name())
    await step("durable_legacy", durable_legacy())
    await step("kv_put_get", kv_put_get())
    await step("kv_watch_helper", kv_watch_helper())
    await step("other_stream_info", other_stream_info())
    await step("other_bucket", other_bucket())
    out["errors"] = refused
    print(json.dumps(out))
    await nc.close()


asyncio.run(main(*sys.argv[1:4]))
