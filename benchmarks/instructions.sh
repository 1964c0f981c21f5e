#!/usr/bin/env bash
# Client instructions per confirmed publish, counted by valgrind's callgrind:
# unlike CPU time, the count is steady on a machine shared with other work.
#
#   benchmarks/instructions.sh [CLIENT ...]     (default: lapin flow-events)
#
# CLIENT is a --clients value of flow-events-bench (lapin, flow-events,
# amqp-session), or nats:X for the NATS comparison's client X (raw,
# flow-events, session; the binary built with `--features nats`, NATS_URL
# or nats://127.0.0.1:4222). For each client and each of 64 and 1 024 in flight, runs
# `flow-events-bench --only steady` under callgrind twice, with N1 and N2
# publishes at that level (N1=1000, N2=4000 unless set), and prints
# (instructions of the second run - those of the first) / (N2 - N1): start-up,
# connections and warm-up cancel out. Every thread of the process is counted
# (lapin's I/O thread too), the broker's are not. Needs valgrind and RabbitMQ;
# uses the release build (BENCH_BIN to use another binary).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${BENCH_BIN:-target/release/flow-events-bench}
url=${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
nats_url=${NATS_URL:-nats://127.0.0.1:4222}
n1=${N1:-1000}
n2=${N2:-4000}
clients=("$@")
[ ${#clients[@]} -gt 0 ] || clients=(lapin flow-events)
command -v valgrind >/dev/null || { echo "instructions.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
[ -x "$bin" ] || cargo build --release -p flow-events-benchmarks

# Total instructions of one run: client $1, --counts $2.
instructions() {
    local out
    out=$(mktemp)
    local run=(--url "$url" --only steady --clients "$1" --rounds 1 --counts "$2" --out /dev/null)
    case $1 in
        nats:*) run=(nats --url "$nats_url" --clients "${1#nats:}" --rounds 1 --slices 1 --counts "$2") ;;
    esac
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "${run[@]}" >/dev/null 2>&1
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
    rm -f "$out"
}

printf '%-12s %9s %22s\n' client "in flight" "instructions/publish"
for client in "${clients[@]}"; do
    for level in 64 1024; do
        # The NATS comparison takes 0 for a level it leaves out.
        z=1
        case $client in nats:*) z=0 ;; esac
        if [ "$level" = 64 ]; then a="$z,$n1,$z" b="$z,$n2,$z"; else a="$z,$z,$n1" b="$z,$z,$n2"; fi
        ir1=$(instructions "$client" "$a")
        ir2=$(instructions "$client" "$b")
        printf '%-12s %9s %22.0f\n' "$client" "$level" "$(echo "($ir2 - $ir1) / ($n2 - $n1)" | bc -l)"
    done
done
