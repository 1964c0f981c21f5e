"""A private queue bound to the events exchange, read with pika: what the
RabbitMQ interop scripts of this folder share."""

import pika


def bound_queue(url, exchange, binding_key):
    """Connects to URL, declares the events exchange (durable topic, as
    flow-events does), binds a private queue to it with BINDING_KEY and prints
    READY. Returns the connection, its channel and the queue."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    queue = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
    channel.queue_bind(queue=queue, exchange=exchange, routing_key=binding_key)
    print("READY", flush=True)
    return connection, channel, queue


def first_message(channel, queue, timeout):
    """The first message of QUEUE as (method, properties, body), not yet
    acked; None if nothing arrives within TIMEOUT seconds."""
    for method, properties, body in channel.consume(queue, inactivity_timeout=timeout):
        if method is None:
            return None
        return method, properties, body
    return None
