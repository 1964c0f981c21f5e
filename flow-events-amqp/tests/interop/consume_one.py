"""Reads one flow-events event with pika, as a Python service would.

Usage: consume_one.py URL EXCHANGE BINDING_KEY [TIMEOUT_SECONDS]

Declares the events exchange (durable topic, as flow-events does), binds a
private queue to it, prints READY, then prints the first event it receives as
one JSON line (id, type, data, and the AMQP properties) and exits 0. Exits 2
if nothing arrives in time.
"""

import json
import sys
from datetime import datetime

import pika


def main() -> int:
    url, exchange, binding_key = sys.argv[1:4]
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 20.0

    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    queue = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
    channel.queue_bind(queue=queue, exchange=exchange, routing_key=binding_key)
    print("READY", flush=True)

    for method, properties, body in channel.consume(queue, inactivity_timeout=timeout):
        if method is None:
            print("no event received", file=sys.stderr, flush=True)
            connection.close()
            return 2
        event = json.loads(body)
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
                    "routing_key": method.routing_key,
                    "message_id": properties.message_id,
                    "amqp_type": properties.type,
                    "content_type": properties.content_type,
                    "delivery_mode": properties.delivery_mode,
                    "amqp_timestamp": properties.timestamp,
                    "app_id": properties.app_id,
                    "headers": properties.headers,
                }
            ),
            flush=True,
        )
        channel.basic_ack(method.delivery_tag)
        break
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
