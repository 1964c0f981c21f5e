"""Reads the trace context of one flow-events event with the OpenTelemetry API.

Usage: trace_of_one.py URL EXCHANGE BINDING_KEY [TIMEOUT_SECONDS]

A Python service consuming with pika continues a trace the way OpenTelemetry
instrumentations do: the global propagator (W3C trace context by default)
extracts the context from the message headers. Declares the events exchange,
binds a private queue to it, prints READY, then prints, for the first message,
one JSON line with the event id and the trace id and span id it carries, and
exits 0. Exits 2 if nothing arrives in time.
"""

import json
import sys

import pika
from opentelemetry import trace
from opentelemetry.propagate import extract


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
        context = extract(properties.headers or {})
        span_context = trace.get_current_span(context).get_span_context()
        print(
            json.dumps(
                {
                    "id": json.loads(body)["id"],
                    "valid": span_context.is_valid,
                    "remote": span_context.is_remote,
                    "trace_id": format(span_context.trace_id, "032x"),
                    "span_id": format(span_context.span_id, "016x"),
                    "sampled": bool(span_context.trace_flags.sampled),
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
