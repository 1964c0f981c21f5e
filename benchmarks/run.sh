#!/usr/bin/env bash
# Reproduces every figure of BENCHMARKS.md.
#
#   benchmarks/run.sh [--only PART,...] [flow-events-bench options, e.g. --rounds 5]
#
# Parts, in the order they run:
#   decorator  the decorator's criterion bench over the memory backend (no broker)
#   outbox     the durable outbox's bench (no broker)
#   memory, steady, drain, outage, http
#              flow-events-bench against RabbitMQ: memory per pending event,
#              steady publishing against raw lapin and aio-pika, drain after
#              reconnect, an outage run (then plotted), and POST /events through
#              the release admin-service and an aiohttp + aio-pika service (wrk)
#   relay      flow-events-relay-bench, the Postgres outbox relay (needs PostgreSQL)
#   nats       the NATS comparison against nats-server with JetStream at
#              127.0.0.1:4222 (or NATS_URL)
# Without --only every part runs; BENCH_DECORATOR=0, BENCH_OUTBOX=0,
# BENCH_RELAY=0 and BENCH_NATS=0 skip one of those. With --only, only the
# parts named run.
#
# Needs RabbitMQ at 127.0.0.1:5672 (guest/guest, or RABBITMQ_URL), Python 3
# with venv and pip, a Rust toolchain and, for the HTTP part, wrk (installed
# with apt-get when missing and this runs as root). Installs aio-pika, aiohttp
# and matplotlib into .venv-bench/ (from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${BENCH_VENV:-.venv-bench}
results=benchmarks/results
url=${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}

# --only: the parts of this script, and those passed on to flow-events-bench.
only=""
bench_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --only) only=$2; shift 2 ;;
        --only=*) only=${1#--only=}; shift ;;
        *) bench_args+=("$1"); shift ;;
    esac
done
known="decorator outbox memory steady drain outage http relay nats"
for part in ${only//,/ }; do
    case " $known " in
        *" $part "*) ;;
        *) echo "run.sh: unknown part '$part' (parts: $known)" >&2; exit 2 ;;
    esac
done
# Whether a part runs: named by --only, or (without --only) not switched off.
wants() {
    local part=$1 switch=${2:-1}
    if [ -n "$only" ]; then
        [[ ",$only," == *",$part,"* ]]
    else
        [ "$switch" != 0 ]
    fi
}
bench_parts=()
for part in memory steady drain outage http; do
    if wants "$part"; then bench_parts+=("$part"); fi
done

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r benchmarks/python/requirements.txt

mkdir -p "$results"

if wants decorator "${BENCH_DECORATOR:-1}"; then
    echo "== decorator over the memory backend (criterion)"
    cargo bench -p flow-events-testkit --bench decorator 2>&1 | grep -v "^ *Compiling " | tee "$results/decorator.txt"
fi

if wants outbox "${BENCH_OUTBOX:-1}"; then
    echo "== durable outbox (see its section of BENCHMARKS.md)"
    cargo bench -p flow-events-outbox --bench outbox 2>&1 | grep -v "^ *Compiling " | tee "$results/outbox.txt"
fi

if [ ${#bench_parts[@]} -gt 0 ]; then
    cargo build --release -p flow-events-benchmarks
    if wants http; then
        cargo build --release -p admin-service
        if ! command -v wrk >/dev/null; then
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                apt-get install -y wrk
            else
                echo "run.sh: the http part needs wrk (Debian: apt-get install wrk)" >&2
                exit 1
            fi
        fi
    fi
    parts=$(IFS=,; echo "${bench_parts[*]}")
    echo "== flow-events-bench --only $parts against $(sed -E 's#//[^@/]*@#//***@#' <<<"$url")"
    target/release/flow-events-bench \
        --url "$url" \
        --python "$venv/bin/python" \
        --out "$results/latest.json" \
        --only "$parts" \
        "${bench_args[@]}" | tee "$results/latest.txt"
    if wants outage; then
        "$venv/bin/python" benchmarks/python/plot_outage.py "$results/latest.json" "$results/outage.svg"
        echo "plot written to $results/outage.svg"
    fi
fi

if wants relay "${BENCH_RELAY:-1}"; then
    echo "== transactional outbox relay against direct publishing (PostgreSQL at \$DATABASE_URL or the local test database)"
    cargo build --release -p flow-events-benchmarks
    target/release/flow-events-relay-bench \
        --url "$url" \
        ${DATABASE_URL:+--database-url "$DATABASE_URL"} \
        --out "$results/relay.json" | tee "$results/relay.txt"
fi

# NATS JetStream beside RabbitMQ: the resilient NATS sink against raw async-nats
# (the `nats` feature of the benchmarks crate).
nats_url=${NATS_URL:-nats://127.0.0.1:4222}
if wants nats "${BENCH_NATS:-1}"; then
    echo "== flow-events-bench nats against $(sed -E 's#//[^@/]*@#//***@#' <<<"$nats_url")"
    cargo build --release -p flow-events-benchmarks --features nats
    target/release/flow-events-bench nats --url "$nats_url" --rounds 9 \
        | tee "$results/nats.txt"
fi
