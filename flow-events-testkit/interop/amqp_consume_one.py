"""Reads one flow-events event with pika, as a Python service would.

Usage: amqp_consume_one.py URL EXCHANGE BINDING_KEY [TIMEOUT_SECONDS]

Binds a private queue to the events exchange, prints READY, then prints the
first event it receives as one JSON line (id, type, data, and the AMQP
properties) and exits 0. Exits 2 if nothing arrives in time.
"""

import sys

from flow_event import arguments, event_fields
from pika_queue import consume_first


def describe(method, properties, body):
    return {
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


if __name__ == "__main__":
    sys.exit(consume_first(*arguments("URL", "EXCHANGE", "BINDING_KEY"), describe))
