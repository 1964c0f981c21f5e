#!/usr/bin/env bash
# Starts, checks and stops the flow-events services on a machine without Docker:
# RabbitMQ (when it is installed) and admin-service in the background.
#
#   scripts/start-services.sh start | status | stop | restart
#
# Settings (environment):
#   PORT                admin-service HTTP port (default 8012)
#   RABBITMQ_URL        broker URL; when RabbitMQ is installed here the default is
#                       amqp://guest:guest@127.0.0.1:5672/%2f, otherwise unset
#                       (admin-service then runs on its in-memory broker)
#   START_RABBITMQ      auto (default): start RabbitMQ if installed and not running;
#                       no: leave RabbitMQ alone and RABBITMQ_URL as it is
#   RUN_DIR             where the pid and log files go (default: run/ in the repo)
#   ADMIN_SERVICE_BIN   a built binary to run instead of building one with cargo
#   BUILD_PROFILE       cargo profile to build with: dev (default) or release
#   START_TIMEOUT       seconds to wait for /health/live after start (default 60)
#   STOP_TIMEOUT        seconds to wait for exit after SIGTERM (default: SHUTDOWN_GRACE x 2 + 5)
# Every other admin-service variable (SERVICE_NAME, LOG_FORMAT, RABBITMQ_*, ...)
# is passed through.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${RUN_DIR:-$ROOT/run}"
PID_FILE="$RUN_DIR/admin-service.pid"
PORT_FILE="$RUN_DIR/admin-service.port"
LOG_FILE="$RUN_DIR/admin-service.log"
START_RABBITMQ="${START_RABBITMQ:-auto}"
BUILD_PROFILE="${BUILD_PROFILE:-dev}"
START_TIMEOUT="${START_TIMEOUT:-60}"
DEFAULT_RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/%2f"

say() { printf '%s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Whether process $1 exists and is not a zombie.
alive() {
    local state
    state="$(ps -o stat= -p "$1" 2>/dev/null || true)"
    [[ -n "$state" && "$state" != Z* ]]
}

# The pid of the running admin-service, or nothing.
running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(tr -dc '0-9' <"$PID_FILE")"
    [[ -n "$pid" ]] || return 1
    alive "$pid" || return 1
    # Guard against a recycled pid.
    [[ "$(ps -o comm= -p "$pid" 2>/dev/null)" == admin-service* ]] || return 1
    printf '%s\n' "$pid"
}

service_port() {
    if [[ -f "$PORT_FILE" ]]; then cat "$PORT_FILE"; else printf '%s\n' "${PORT:-8012}"; fi
}

rabbitmq_up() {
    rabbitmq-diagnostics -q ping >/dev/null 2>&1
}

ensure_rabbitmq() {
    if [[ "$START_RABBITMQ" == no ]]; then
        return 0
    fi
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        say "RabbitMQ is not installed here: admin-service runs without it${RABBITMQ_URL:+ (RABBITMQ_URL is set: it will keep trying)}"
        return 0
    fi
    if rabbitmq_up; then
        say "RabbitMQ is running"
    else
        say "starting RabbitMQ (rabbitmq-server -detached)"
        rabbitmq-server -detached </dev/null >/dev/null 2>&1 || true
        if rabbitmqctl -q -t 60 await_startup </dev/null >/dev/null 2>&1; then
            say "RabbitMQ is up"
        else
            say "warning: RabbitMQ did not start; admin-service starts without it and keeps trying"
        fi
    fi
    export RABBITMQ_URL="${RABBITMQ_URL:-$DEFAULT_RABBITMQ_URL}"
}

build() {
    if [[ -n "${ADMIN_SERVICE_BIN:-}" ]]; then
        [[ -x "$ADMIN_SERVICE_BIN" ]] || fail "ADMIN_SERVICE_BIN=$ADMIN_SERVICE_BIN is not an executable"
        printf '%s\n' "$ADMIN_SERVICE_BIN"
        return
    fi
    command -v cargo >/dev/null 2>&1 || fail "cargo not found: install Rust or set ADMIN_SERVICE_BIN"
    local dir=debug
    [[ "$BUILD_PROFILE" == release ]] && dir=release
    say "building admin-service ($BUILD_PROFILE)" >&2
    (cd "$ROOT" && cargo build --quiet --profile "$BUILD_PROFILE" -p admin-service) >&2
    printf '%s\n' "${CARGO_TARGET_DIR:-$ROOT/target}/$dir/admin-service"
}

health() {
    curl -sS --max-time 5 -w '\nHTTP %{http_code}\n' "http://127.0.0.1:$1/health"
}

start() {
    mkdir -p "$RUN_DIR"
    local pid
    if pid="$(running_pid)"; then
        say "admin-service is already running (pid $pid) on port $(service_port)"
        return 0
    fi
    ensure_rabbitmq
    local bin port
    bin="$(build)"
    port="${PORT:-8012}"
    export PORT="$port"
    say "starting admin-service on port $port (log: $LOG_FILE)"
    nohup "$bin" </dev/null >>"$LOG_FILE" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$PID_FILE"
    printf '%s\n' "$port" >"$PORT_FILE"
    local deadline=$((SECONDS + START_TIMEOUT))
    until curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$port/health/live" 2>/dev/null; do
        if ! alive "$pid"; then
            rm -f "$PID_FILE" "$PORT_FILE"
            say "admin-service exited during start-up; the end of its log:" >&2
            tail -n 20 "$LOG_FILE" >&2
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            say "admin-service (pid $pid) did not answer within ${START_TIMEOUT}s; see $LOG_FILE" >&2
            exit 1
        fi
        sleep 0.2
    done
    say "admin-service is up (pid $pid): http://localhost:$port/health"
}

status() {
    local pid port code=0
    if command -v rabbitmq-diagnostics >/dev/null 2>&1 && [[ "$START_RABBITMQ" != no ]]; then
        if rabbitmq_up; then say "RabbitMQ: running"; else say "RabbitMQ: not running"; fi
    fi
    if pid="$(running_pid)"; then
        port="$(service_port)"
        say "admin-service: running (pid $pid) on port $port"
        health "$port" || code=1
    else
        say "admin-service: not running"
        code=3
    fi
    return "$code"
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        say "admin-service is not running"
        rm -f "$PID_FILE" "$PORT_FILE"
        return 0
    fi
    local grace="${SHUTDOWN_GRACE:-10}"
    local timeout="${STOP_TIMEOUT:-$(( ${grace%.*} * 2 + 5 ))}"
    say "stopping admin-service (pid $pid): SIGTERM, waiting up to ${timeout}s"
    kill -TERM "$pid"
    local deadline=$((SECONDS + timeout))
    while alive "$pid"; do
        if ((SECONDS >= deadline)); then
            say "warning: admin-service did not stop within ${timeout}s; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$PID_FILE" "$PORT_FILE"
    local left
    left="$(grep -o '[0-9]* events left undelivered' "$LOG_FILE" 2>/dev/null | tail -n 1 || true)"
    say "admin-service stopped${left:+ ($left)}"
}

case "${1:-}" in
    start) start ;;
    status) status ;;
    stop) stop ;;
    restart) stop && start ;;
    *)
        say "usage: $0 start | status | stop | restart" >&2
        exit 2
        ;;
esac
