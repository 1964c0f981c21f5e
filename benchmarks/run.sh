#!/usr/bin/env bash
# Reproduces every figure of BENCHMARKS.md.
#
#   benchmarks/run.sh [flow-events-bench options, e.g. --rounds 5]
#
# Needs RabbitMQ at 127.0.0.1:5672 (guest/guest, or RABBITMQ_URL), Python 3
# with venv and pip, and a Rust toolchain. Installs aio-pika and matplotlib
# into .venv-bench/ (from PyPI), runs flow-events-bench (steady publishing
# against raw lapin and aio-pika, drain, outage, memory), then plots the
# outage run.
# Before them, the decorator's criterion bench and the durable outbox's bench
# (no broker needed); BENCH_DECORATOR=0 or BENCH_OUTBOX=0 skips one. After
# them, flow-events-relay-bench (the Postgres outbox relay; needs PostgreSQL,
# BENCH_RELAY=0 skips it), and the NATS comparison against nats-server with
# JetStream at 127.0.0.1:4222 (or NATS_URL; BENCH_NATS=0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${BENCH_VENV:-.venv-bench}
results=benchmarks/results
url=${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r benchmarks/python/requirements.txt

mkdir -p "$results"
cargo build --release -p flow-events-benchmarks

if [ "${BENCH_DECORATOR:-1}" != 0 ]; then
    echo "== decorator over the memory backend (criterion)"
    cargo bench -p flow-events-testkit --bench decorator 2>&1 | grep -v "^ *Compiling " | tee "$results/decorator.txt"
fi

if [ "${BENCH_OUTBOX:-1}" != 0 ]; then
    echo "== durable outbox (see its section of BENCHMARKS.md)"
    cargo bench -p flow-events-outbox --bench outbox 2>&1 | grep -v "^ *Compiling " | tee "$results/outbox.txt"
fi

echo "== flow-events-bench against $(sed -E 's#//[^@/]*@#//***@#' <<<"$url")"
target/release/flow-events-bench \
    --url "$url" \
    --python "$venv/bin/python" \
    --out "$results/latest.json" \
    "$@" | tee "$results/latest.txt"

if [ "${BENCH_RELAY:-1}" != 0 ]; then
    echo "== transactional outbox relay against direct publishing (PostgreSQL at \$DATABASE_URL or the local test database)"
    target/release/flow-events-relay-bench \
        --url "$url" \
        ${DATABASE_URL:+--database-url "$DATABASE_URL"} \
        --out "$results/relay.json" | tee "$results/relay.txt"
fi

# `--only` without the outage part leaves nothing to plot.
if "$venv/bin/python" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get("outage") else 1)' "$results/latest.json"; then
    "$venv/bin/python" benchmarks/python/plot_outage.py "$results/latest.json" "$results/outage.svg"
    echo "plot written to $results/outage.svg"
else
    echo "no outage run in $results/latest.json: no plot"
fi

# NATS JetStream beside RabbitMQ: the resilient NATS sink against raw async-nats
# (the `nats` feature of the benchmarks crate). BENCH_NATS=0 skips it.
nats_url=${NATS_URL:-nats://127.0.0.1:4222}
if [ "${BENCH_NATS:-1}" != 0 ]; then
    echo "== flow-events-bench nats against $(sed -E 's#//[^@/]*@#//***@#' <<<"$nats_url")"
    cargo build --release -p flow-events-benchmarks --features nats
    target/release/flow-events-bench nats --url "$nats_url" --rounds 9 --counts 2000,20000,20000 \
        | tee "$results/nats.txt"
fi
