"""Reads the first dead letter of a queue with pika and leaves it there.

Usage: amqp_peek_dead_letter.py URL QUEUE [TIMEOUT_SECONDS]

Gets the first message of QUEUE, prints its routing key, message id and
headers as one JSON line, and puts it back (nack with requeue), so that the
queue is as it was. Exits 2 if the queue stays empty.
"""

import json
import sys
import time

import pika

from flow_event import arguments, emit, nothing


def text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def main() -> int:
    url, queue, timeout = arguments("URL", "QUEUE")
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        deadline = time.monotonic() + timeout
        while True:
            method, properties, body = channel.basic_get(queue=queue, auto_ack=False)
            if method is not None:
                break
            if time.monotonic() > deadline:
                return nothing(f"no message in {queue}")
            time.sleep(0.05)
        headers = {
            k: text(v) for k, v in (properties.headers or {}).items() if k.startswith("x-flow-")
        }
        emit(
            {
                "routing_key": method.routing_key,
                "message_id": properties.message_id,
                "headers": headers,
                "body": json.loads(body),
            }
        )
        channel.basic_nack(method.delivery_tag, requeue=True)
        return 0
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
