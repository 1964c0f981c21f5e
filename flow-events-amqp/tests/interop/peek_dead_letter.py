"""Reads the first dead letter of a queue with pika and leaves it there.

Usage: peek_dead_letter.py URL QUEUE [TIMEOUT_SECONDS]

Gets the first message of QUEUE, prints its routing key, message id and
headers as one JSON line, and puts it back (nack with requeue), so that the
queue is as it was. Exits 2 if the queue stays empty.
"""

import json
import sys
import time

import pika


def text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def main() -> int:
    url, queue = sys.argv[1:3]
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    deadline = time.monotonic() + timeout
    while True:
        method, properties, body = channel.basic_get(queue=queue, auto_ack=False)
        if method is not None:
            break
        if time.monotonic() > deadline:
            print(f"no message in {queue}", file=sys.stderr, flush=True)
            connection.close()
            return 2
        time.sleep(0.05)
    headers = {k: text(v) for k, v in (properties.headers or {}).items() if k.startswith("x-flow-")}
    print(
        json.dumps(
            {
                "routing_key": method.routing_key,
                "message_id": properties.message_id,
                "headers": headers,
                "body": json.loads(body),
            }
        ),
        flush=True,
    )
    channel.basic_nack(method.delivery_tag, requeue=True)
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
