"""The first event of a private queue bound to the events exchange, read
with pika: what the RabbitMQ consumer scripts of this folder share."""

import pika

from flow_event import emit, nothing


def consume_first(url, exchange, binding_key, timeout, describe):
    """Connects to URL, declares the events exchange (durable topic, as
    flow-events does), binds a private queue to it with BINDING_KEY and prints
    READY; then prints DESCRIBE(method, properties, body) of the first message
    as one JSON line and acks it. Returns the exit status: 0, or 2 if nothing
    arrives within TIMEOUT seconds."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
        queue = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
        channel.queue_bind(queue=queue, exchange=exchange, routing_key=binding_key)
        print("READY", flush=True)
        for method, properties, body in channel.consume(queue, inactivity_timeout=timeout):
            if method is None:
                break
            emit(describe(method, properties, body))
            channel.basic_ack(method.delivery_tag)
            return 0
        return nothing("no event received")
    finally:
        connection.close()
