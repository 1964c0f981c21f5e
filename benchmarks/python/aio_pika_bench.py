"""Publishing benchmark of aio-pika, the Python stack flow-events replaces.

`connect_robust`, a channel with publisher confirms, persistent JSON messages
of --body-bytes bytes (an event: id, type, data, timestamp, serialised per
message, as the original service did) to a durable topic exchange, with
--in-flight publishers each awaiting its confirm before the next publish.

Prints one JSON line: count, failed, seconds, p50_us, p99_us, max_us,
cpu_seconds (of this process while publishing), aio_pika (its version).
Run by `flow-events-bench --python ...`; see BENCHMARKS.md.
"""

import argparse
import asyncio
import datetime
import json
import math
import time
import uuid

import aio_pika

EVENT_TYPE_DEFAULT = "bench.event"


def percentile(sorted_values, p):
    """Nearest-rank percentile, as the Rust side computes it."""
    if not sorted_values:
        return 0.0
    rank = math.ceil(p * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def make_body(event_type, pad):
    return json.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": event_type,
            "data": {"pad": pad},
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        },
        separators=(",", ":"),
    ).encode()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--routing-key", default=EVENT_TYPE_DEFAULT)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=1)
    parser.add_argument("--body-bytes", type=int, default=1024)
    args = parser.parse_args()

    base = len(make_body(args.routing_key, ""))
    pad = "x" * max(0, args.body_bytes - base)

    connection = await aio_pika.connect_robust(args.url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            args.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        remaining = args.count
        latencies = []
        failed = 0

        async def publisher():
            nonlocal remaining, failed
            while remaining > 0:
                remaining -= 1
                message = aio_pika.Message(
                    body=make_body(args.routing_key, pad),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=str(uuid.uuid4()),
                    type=args.routing_key,
                    app_id="aio-pika-bench",
                    timestamp=datetime.datetime.now(datetime.timezone.utc),
                )
                t = time.perf_counter_ns()
                try:
                    await exchange.publish(message, routing_key=args.routing_key)
                except Exception:  # noqa: BLE001 - a failed publish is counted, not fatal
                    failed += 1
                latencies.append(time.perf_counter_ns() - t)

        cpu_start = time.process_time()
        start = time.perf_counter()
        await asyncio.gather(*(publisher() for _ in range(args.in_flight)))
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
    finally:
        await connection.close()

    latencies.sort()
    print(
        json.dumps(
            {
                "count": args.count,
                "failed": failed,
                "seconds": seconds,
                "p50_us": percentile(latencies, 0.50) / 1000,
                "p99_us": percentile(latencies, 0.99) / 1000,
                "max_us": (latencies[-1] if latencies else 0) / 1000,
                "cpu_seconds": cpu_seconds,
                "aio_pika": aio_pika.__version__,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
