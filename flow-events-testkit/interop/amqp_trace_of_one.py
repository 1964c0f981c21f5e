"""Reads the trace context of one flow-events event with the OpenTelemetry API.

Usage: amqp_trace_of_one.py URL EXCHANGE BINDING_KEY [TIMEOUT_SECONDS]

A Python service consuming with pika continues a trace the way OpenTelemetry
instrumentations do: the global propagator (W3C trace context by default)
extracts the context from the message headers. Binds a private queue to the
events exchange, prints READY, then prints, for the first message, one JSON
line with the event id and the trace id and span id it carries, and exits 0.
Exits 2 if nothing arrives in time.
"""

import json
import sys

from opentelemetry import trace
from opentelemetry.propagate import extract

from flow_event import arguments
from pika_queue import consume_first


def describe(method, properties, body):
    context = extract(properties.headers or {})
    span_context = trace.get_current_span(context).get_span_context()
    return {
        "id": json.loads(body)["id"],
        "valid": span_context.is_valid,
        "remote": span_context.is_remote,
        "trace_id": format(span_context.trace_id, "032x"),
        "span_id": format(span_context.span_id, "016x"),
        "sampled": bool(span_context.trace_flags.sampled),
    }


if __name__ == "__main__":
    sys.exit(consume_first(*arguments("URL", "EXCHANGE", "BINDING_KEY"), describe))
