"""Reads one flow-events event from JetStream with nats-py, as a Python
service would.

Usage: nats_consume_one.py URL STREAM SUBJECT [TIMEOUT_SECONDS]

Makes a durable pull consumer of its own on STREAM filtered on SUBJECT,
prints READY, then prints the first event it receives as one JSON line
(id, type, data from the body, and the message's subject and headers),
acks it, deletes its consumer and exits 0. Exits 2 if nothing arrives in
time.
"""

import asyncio
import sys
import uuid

import nats
from nats.errors import TimeoutError as NatsTimeout

from flow_event import arguments, emit, event_fields, nothing


async def main() -> int:
    url, stream, subject, timeout = arguments("URL", "STREAM", "SUBJECT")
    nc = await nats.connect(url)
    js = nc.jetstream()
    durable = f"py-{uuid.uuid4().hex[:12]}"
    sub = await js.pull_subscribe(subject, durable=durable, stream=stream)
    print("READY", flush=True)
    try:
        try:
            msgs = await sub.fetch(1, timeout=timeout)
        except NatsTimeout:
            return nothing("no event received")
        msg = msgs[0]
        emit(
            {
                **event_fields(msg.data),
                "subject": msg.subject,
                "headers": dict(msg.headers or {}),
            }
        )
        await msg.ack()
        return 0
    finally:
        await js.delete_consumer(stream, durable)
        await nc.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
