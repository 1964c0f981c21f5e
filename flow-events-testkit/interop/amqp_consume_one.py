"""Reads one flow-events event with pika, as a Python service would.

Usage: amqp_consume_one.py URL EXCHANGE BINDING_KEY [TIMEOUT_SECONDS]

Binds a private queue to the events exchange, prints READY, then prints the
first event it receives as one JSON line (id, type, data, and the AMQP
properties) and exits 0. Exits 2 if nothing arrives in time.
"""

import sys

from flow_event import arguments, emit, event_fields, nothing
from pika_queue import bound_queue, first_message


def main() -> int:
    url, exchange, binding_key, timeout = arguments("URL", "EXCHANGE", "BINDING_KEY")
    connection, channel, queue = bound_queue(url, exchange, binding_key)
    try:
        message = first_message(channel, queue, timeout)
        if message is None:
            return nothing("no event received")
        method, properties, body = message
        emit(
            {
                **event_fields(body),
                "routing_key": method.routing_key,
                "message_id": properties.message_id,
                "amqp_type": properties.type,
                "content_type": properties.content_type,
                "delivery_mode": properties.delivery_mode,
                "amqp_timestamp": properties.timestamp,
                "app_id": properties.app_id,
                "headers": properties.headers,
            }
        )
        channel.basic_ack(method.delivery_tag)
        return 0
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
