"""A minimal equivalent of the original Python service, for the HTTP benchmark.

aiohttp serving `POST /events` (`{"type": ..., "data": ...}`), each event
published with aio-pika (`connect_robust`, one channel with publisher
confirms) as a persistent JSON message to a durable topic exchange, the
request answered 202 `{"id", "outcome": "confirmed"}` once the broker has
confirmed it; 400 for a body that is not an event, 503 when the publish
fails. `GET /health` answers 200 once connected.

Run by `flow-events-bench --only http`; see BENCHMARKS.md. Written for the
benchmark only: no buffering, no retry, no auth.
"""

import argparse
import asyncio
import datetime
import json
import uuid

import aio_pika
from aiohttp import web


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    connection = await aio_pika.connect_robust(args.url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(
        args.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )

    async def publish(request):
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": "invalid JSON"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            return web.json_response({"error": "no type"}, status=400)
        event_type = body["type"]
        event_id = str(uuid.uuid4())
        now = datetime.datetime.now(datetime.timezone.utc)
        message = aio_pika.Message(
            json.dumps(
                {
                    "id": event_id,
                    "type": event_type,
                    "data": body.get("data", {}),
                    "timestamp": now.isoformat(),
                },
                separators=(",", ":"),
            ).encode(),
            message_id=event_id,
            type=event_type,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=now,
            app_id="python-http-bench",
        )
        try:
            await exchange.publish(message, routing_key=event_type)
        except Exception as e:  # noqa: BLE001 - any failure is a 503 here
            return web.json_response({"error": str(e)}, status=503)
        return web.json_response({"id": event_id, "outcome": "confirmed"}, status=202)

    async def health(_request):
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/events", publish)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await connection.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
