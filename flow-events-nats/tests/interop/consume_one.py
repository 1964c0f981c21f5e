"""Reads one flow-events event from JetStream with nats-py, as a Python
service would.

Usage: consume_one.py URL STREAM SUBJECT [TIMEOUT_SECONDS]

Makes a durable pull consumer of its own on STREAM filtered on SUBJECT,
prints READY, then prints the first event it receives as one JSON line
(id, type, data from the body, and the message's subject and headers),
acks it, deletes its consumer and exits 0. Exits 2 if nothing arrives in
time.
"""

import asyncio
import json
import sys
import uuid
from datetime import datetime

import nats
from nats.errors import TimeoutError as NatsTimeout


async def main() -> int:
    url, stream, subject = sys.argv[1:4]
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 20.0

    nc = await nats.connect(url)
    js = nc.jetstream()
    durable = f"py-{uuid.uuid4().hex[:12]}"
    sub = await js.pull_subscribe(subject, durable=durable, stream=stream)
    print("READY", flush=True)
    try:
        try:
            msgs = await sub.fetch(1, timeout=timeout)
        except NatsTimeout:
            print("no event received", file=sys.stderr, flush=True)
            return 2
        msg = msgs[0]
        event = json.loads(msg.data)
        print(
            json.dumps(
                {
                    "id": event["id"],
                    "type": event["type"],
                    "data": event["data"],
                    "timestamp": event["timestamp"],
                    "timestamp_unix": datetime.fromisoformat(
                        event["timestamp"].replace("Z", "+00:00")
                    ).timestamp(),
                    "subject": msg.subject,
                    "headers": dict(msg.headers or {}),
                }
            ),
            flush=True,
        )
        await msg.ack()
        return 0
    finally:
        await js.delete_consumer(stream, durable)
        await nc.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
