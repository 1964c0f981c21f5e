#!/usr/bin/env bash
# Runs schemathesis against admin-service's OpenAPI description (/openapi.json):
# once with RabbitMQ up (127.0.0.1:5672) and once with the broker unreachable.
# Every response must match the description and none may be a 5xx.
#
#   scripts/api-conformance.sh            # needs .venv/bin/schemathesis (see .ci/run)
#
# EXAMPLES (default 25) bounds the examples per operation, to keep the run short.
set -euo pipefail
cd "$(dirname "$0")/.."

st=${SCHEMATHESIS:-.venv/bin/schemathesis}
examples=${EXAMPLES:-25}
token="conformance-$RANDOM$RANDOM"

cargo build --quiet -p admin-service
bin=target/debug/admin-service

# The service declares its exchange on the broker; it goes when the script
# ends, whatever the outcome (pika from the same venv; a failed clean-up
# does not fail the run).
exchange=flow-events-ci.conformance
python=${PYTHON:-.venv/bin/python}
delete_exchange() {
  "$python" - "$exchange" <<'PY' >/dev/null 2>&1 || true
import sys
import pika
connection = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2f"))
connection.channel().exchange_delete(sys.argv[1])
connection.close()
PY
}
trap delete_exchange EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

run() {
  local name=$1 url=$2 required=$3
  local port log pid status=0
  port=$(free_port)
  log=$(mktemp)
  echo "== schemathesis, broker $name"
  env PORT="$port" API_TOKEN="$token" RABBITMQ_URL="$url" RABBITMQ_REQUIRED="$required" \
      RABBITMQ_EXCHANGE="$exchange" RUST_LOG=warn,lapin=off \
      "$bin" >"$log" 2>&1 &
  pid=$!
  "$st" run "http://127.0.0.1:$port/openapi.json" \
      --wait-for-schema 30 \
      -H "Authorization: Bearer $token" \
      --checks all \
      --max-examples "$examples" \
      --generation-codec ascii \
      --phases examples,coverage,fuzzing \
      --seed 19 || status=$?
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ "$status" -ne 0 ]; then
    echo "--- admin-service log"; cat "$log"
  fi
  rm -f "$log"
  return "$status"
}

# Required: the service starts (and answers) only once connected.
run up "amqp://guest:guest@127.0.0.1:5672/%2f" true
run down "amqp://guest:guest@127.0.0.1:$(free_port)/%2f" false
