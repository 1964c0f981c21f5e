#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, beside a broker that may run
# on the default ports (5672, 25672), which this script never touches: for
# the cluster tests (flow-events-amqp/tests/cluster.rs) and for trying
# failover by hand.
#
#   scripts/rabbitmq-cluster.sh start         start the nodes that are not running, cluster
#                                             them, wait until all three run together
#   scripts/rabbitmq-cluster.sh stop          stop every node (clean shutdown, then SIGKILL)
#   scripts/rabbitmq-cluster.sh status        each node's state; exit 0 only when all
#                                             three run as one cluster
#   scripts/rabbitmq-cluster.sh kill-node N   SIGKILL node N's Erlang VM (a crash)
#   scripts/rabbitmq-cluster.sh start-node N  start node N again and wait until it is
#                                             back in the cluster
#   scripts/rabbitmq-cluster.sh clean         stop, then delete the run folder
#
# Node N (1 to 3) is flow-events-cluster-N@localhost, answers AMQP at
# 127.0.0.1:568N (guest/guest, from loopback only) and talks to the other
# nodes on 127.0.0.1:2568N. The nodes share an Erlang cookie of their own
# (not the system broker's), so no command of this script can reach another
# broker. They enable no plugin: no listener but AMQP and distribution.
# epmd (4369) is shared with every Erlang node on the machine; it is left
# running.
#
# Settings (environment):
#   FLOW_EVENTS_CLUSTER_DIR   the run folder: data, logs, configuration, cookie
#                             (default: $TMPDIR/flow-events-rabbitmq-cluster,
#                             /tmp when TMPDIR is unset); it must be reachable
#                             by the user the nodes run as
#   FLOW_EVENTS_CLUSTER_TIMEOUT  seconds to wait for a node or the cluster (default 120)
#
# When run as root where a `rabbitmq` user exists (Debian and Ubuntu
# packages), the nodes run as that user and their folders belong to it;
# otherwise they run as the current user.
set -euo pipefail

NODES=(1 2 3)
NAME_PREFIX=flow-events-cluster
HOST=localhost
AMQP_PORT_BASE=5680
DIST_PORT_BASE=25680
DIR="${FLOW_EVENTS_CLUSTER_DIR:-${TMPDIR:-/tmp}/flow-events-rabbitmq-cluster}"
TIMEOUT="${FLOW_EVENTS_CLUSTER_TIMEOUT:-120}"

say() { printf '%s\n' "$*"; }
fail() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

node_name() { printf '%s-%s@%s\n' "$NAME_PREFIX" "$1" "$HOST"; }
amqp_port() { printf '%s\n' $((AMQP_PORT_BASE + $1)); }
dist_port() { printf '%s\n' $((DIST_PORT_BASE + $1)); }
node_dir() { printf '%s/node-%s\n' "$DIR" "$1"; }

check_node_number() {
    [[ "${1:-}" =~ ^[1-3]$ ]] || fail "expected a node number from 1 to 3, got '${1:-}'"
}

# The user the nodes run as, or nothing for the current user.
RUN_USER=""
if [[ "$(id -u)" == 0 ]] && id rabbitmq >/dev/null 2>&1; then
    RUN_USER=rabbitmq
fi

# Runs a command as the nodes' user.
as_node_user() {
    if [[ -n "$RUN_USER" ]]; then
        runuser -u "$RUN_USER" -- "$@"
    else
        "$@"
    fi
}

# The folder of RabbitMQ's own scripts. Debian's /usr/sbin/rabbitmq-* are
# wrappers that switch to the rabbitmq user with its home, and so its cookie:
# the scripts behind them take the environment given here.
find_sbin() {
    if [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]]; then
        printf '%s\n' /usr/lib/rabbitmq/bin
        return
    fi
    local server
    server="$(command -v rabbitmq-server 2>/dev/null)" ||
        fail "rabbitmq-server not found: install RabbitMQ (or use docker-compose.cluster.yml)"
    dirname "$server"
}

# The environment of node N, for the server and for the command-line tools.
node_env() {
    local n="$1" nd
    nd="$(node_dir "$n")"
    printf '%s\n' \
        "HOME=$DIR/home" \
        "RABBITMQ_CONF_ENV_FILE=$DIR/rabbitmq-env.conf" \
        "RABBITMQ_NODENAME=$(node_name "$n")" \
        "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1" \
        "RABBITMQ_NODE_PORT=$(amqp_port "$n")" \
        "RABBITMQ_DIST_PORT=$(dist_port "$n")" \
        "RABBITMQ_MNESIA_BASE=$nd/mnesia" \
        "RABBITMQ_LOG_BASE=$nd/log" \
        "RABBITMQ_PID_FILE=$nd/pid" \
        "RABBITMQ_ENABLED_PLUGINS_FILE=$nd/enabled_plugins" \
        "RABBITMQ_CONFIG_FILE=$nd/rabbitmq.conf" \
        "RABBITMQ_ADVANCED_CONFIG_FILE=$nd/advanced.config" \
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}" \
        "ERL_CRASH_DUMP=$nd/erl_crash.dump"
}

# Runs RabbitMQ's tool $2 (rabbitmqctl, rabbitmq-diagnostics, ...) against node $1.
tool() {
    local n="$1" name="$2"
    shift 2
    local -a env
    mapfile -t env < <(node_env "$n")
    (cd "$DIR" && as_node_user env "${env[@]}" "$SBIN/$name" -n "$(node_name "$n")" "$@")
}
ctl() {
    local n="$1"
    shift
    tool "$n" rabbitmqctl "$@"
}

# Prints the result of the Erlang expression $2 evaluated on node $1.
node_eval() {
    ctl "$1" -q eval "$2" </dev/null 2>/dev/null
}

# Whether process $1 exists and is not a zombie. (The main thread of a VM
# being killed can be a zombie while other threads still hold its sockets:
# see listening.)
alive() {
    local state
    state="$(ps -o stat= -p "$1" 2>/dev/null || true)"
    [[ -n "$state" && "$state" != Z* ]]
}

# Whether process $1 is alive and is the VM of node $2.
is_node_vm() {
    local pid="$1" n="$2"
    [[ -n "$pid" ]] && alive "$pid" || return 1
    if [[ -r "/proc/$pid/environ" ]]; then
        { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qx "RABBITMQ_NODENAME=$(node_name "$n")"
    else
        ps -ww -o args= -p "$pid" 2>/dev/null | grep -qF -- "-home $DIR/home"
    fi
}

# The pid of node N's VM, when it runs.
node_pid() {
    local n="$1" file pid
    file="$(node_dir "$n")/pid"
    [[ -f "$file" ]] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    is_node_vm "$pid" "$n" || return 1
    printf '%s\n' "$pid"
}

# Whether anything listens on one of node N's ports.
listening() {
    local n="$1" port
    for port in "$(amqp_port "$n")" "$(dist_port "$n")"; do
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            return 0
        fi
    done
    return 1
}

# Fails when something other than node N holds one of its ports.
check_ports_free() {
    local n="$1" port
    for port in "$(amqp_port "$n")" "$(dist_port "$n")"; do
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            fail "port $port of node $n is taken by another process: $(ss -Hltnp "sport = :$port" 2>/dev/null | head -n 1)"
        fi
    done
}

# Writes the run folder: cookie, environment file, each node's configuration.
prepare() {
    if [[ ! -d "$DIR" ]]; then
        mkdir -p "$DIR"
        # The nodes' user must reach its folders in it.
        chmod 755 "$DIR"
    fi
    mkdir -p "$DIR/home"
    chmod 700 "$DIR/home"
    local cookie="$DIR/home/.erlang.cookie"
    if [[ ! -s "$cookie" ]]; then
        # Random letters: the cookie only these nodes and this script know.
        local letters=""
        while ((${#letters} < 32)); do
            letters+="$(head -c 256 /dev/urandom | LC_ALL=C tr -dc 'A-Z')"
        done
        (umask 077 && printf '%s' "${letters:0:32}" >"$cookie")
    fi
    chmod 400 "$cookie"
    cat >"$DIR/rabbitmq-env.conf" <<'EOF'
# Read by the cluster's nodes and tools instead of the system's rabbitmq-env.conf.
ERL_EPMD_ADDRESS=127.0.0.1
EOF
    local n nd
    for n in "${NODES[@]}"; do
        nd="$(node_dir "$n")"
        mkdir -p "$nd/mnesia" "$nd/log"
        cat >"$nd/rabbitmq.conf" <<EOF
# Node $n of the local test cluster (scripts/rabbitmq-cluster.sh).
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
# guest may connect, from loopback only (the default, stated).
loopback_users.guest = true
EOF
        # No plugins: none of them may open a listener on a port another broker uses.
        printf '[].\n' >"$nd/enabled_plugins"
    done
    if [[ -n "$RUN_USER" ]]; then
        chown -R "$RUN_USER:" "$DIR/home" "$DIR"/node-*
    fi
    as_node_user test -w "$(node_dir 1)/mnesia" ||
        fail "$DIR is not writable by ${RUN_USER:-$(id -un)}: choose another FLOW_EVENTS_CLUSTER_DIR"
}

# Starts node N's VM in the background unless it runs.
boot_node() {
    local n="$1"
    if node_pid "$n" >/dev/null; then
        return 0
    fi
    check_ports_free "$n"
    local nd
    nd="$(node_dir "$n")"
    rm -f "$nd/pid"
    say "starting node $n ($(node_name "$n"), AMQP 127.0.0.1:$(amqp_port "$n"))"
    local -a env
    mapfile -t env < <(node_env "$n")
    (cd "$nd" && as_node_user env "${env[@]}" "$SBIN/rabbitmq-server" -detached \
        </dev/null >>"$nd/log/startup.log" 2>&1) ||
        fail "node $n did not start; see $nd/log/startup.log"
}

# What node N says of itself, in one call: "running R P" (R: cluster
# members it sees running; P: its active plugins, as an Erlang list), or
# "booting"; nothing when it does not answer.
node_info() {
    node_eval "$1" 'case rabbit:is_running() of
        true -> lists:flatten(io_lib:format("running ~b ~w",
                    [length(rabbit_nodes:all_running()), rabbit_plugins:active()]));
        false -> "booting"
    end.' | tr -d '"'
}

# Waits until node N has booted (the rabbit application runs). The cheap
# check first: each call of a RabbitMQ tool starts an Erlang VM, which slows
# the boot it waits for on a small machine.
await_node() {
    local n="$1" started=$SECONDS deadline=$((SECONDS + TIMEOUT))
    until ss -Hltn "sport = :$(amqp_port "$n")" 2>/dev/null | grep -q . &&
        [[ "$(node_info "$n")" == running* ]]; do
        if ((SECONDS >= deadline)); then
            fail "node $n did not boot within ${TIMEOUT}s; see $(node_dir "$n")/log"
        fi
        # The pid file is written a moment after the start.
        if ((SECONDS > started + 10)) && ! node_pid "$n" >/dev/null; then
            fail "node $n exited during boot; see $(node_dir "$n")/log"
        fi
        sleep 0.2
    done
}

# The names of the cluster's members, as node N sees them, one a line.
members_seen_by() {
    node_eval "$1" 'rabbit_nodes:all().' | grep -o "$NAME_PREFIX-[0-9]*@$HOST" || true
}

# Whether every member, asked by node N, sees all three running.
cluster_whole_seen_by() {
    [[ "$(node_eval "$1" 'Nodes = rabbit_nodes:all(),
        length(Nodes) =:= '"${#NODES[@]}"' andalso lists:all(fun(N) ->
            case rpc:call(N, rabbit_nodes, all_running, [], 5000) of
                L when is_list(L) -> length(L) =:= '"${#NODES[@]}"';
                _ -> false
            end
        end, Nodes).')" == true ]]
}

# Makes node N a member of node 1's cluster, unless it is one.
join_node() {
    local n="$1" first
    first="$(node_name 1)"
    if members_seen_by "$n" | grep -qx "$first"; then
        return 0
    fi
    say "joining node $n to the cluster of node 1"
    ctl "$n" -q stop_app </dev/null >/dev/null
    ctl "$n" -q join_cluster "$first" </dev/null >/dev/null
    ctl "$n" -q start_app </dev/null >/dev/null
}

# Waits until every node sees all three running together, asking node N.
await_cluster() {
    local n="$1" deadline=$((SECONDS + TIMEOUT))
    until cluster_whole_seen_by "$n"; do
        if ((SECONDS >= deadline)); then
            fail "the nodes do not all see ${#NODES[@]} nodes running within ${TIMEOUT}s"
        fi
        sleep 0.5
    done
}

cmd_start() {
    prepare
    local n
    # All at once: a node that was not the last of its cluster to stop waits
    # at boot for the others.
    for n in "${NODES[@]}"; do
        boot_node "$n"
    done
    for n in "${NODES[@]}"; do
        await_node "$n"
    done
    for n in "${NODES[@]:1}"; do
        join_node "$n"
    done
    await_cluster 1
    say "cluster running: $(for n in "${NODES[@]}"; do printf 'amqp://guest:guest@127.0.0.1:%s/%%2f ' "$(amqp_port "$n")"; done)"
}

cmd_start_node() {
    local n="$1"
    prepare
    boot_node "$n"
    await_node "$n"
    join_node "$n"
    await_cluster "$n"
    say "node $n is running and the cluster is whole"
}

cmd_kill_node() {
    local n="$1" pid
    pid="$(node_pid "$n")" || fail "node $n is not running"
    kill -KILL "$pid"
    local deadline=$((SECONDS + 10))
    while alive "$pid" || listening "$n"; do
        ((SECONDS < deadline)) || fail "node $n (pid $pid) still runs after SIGKILL"
        sleep 0.05
    done
    say "node $n killed (SIGKILL to pid $pid)"
}

# Stops node N: a clean shutdown, then SIGKILL if it takes too long.
stop_node() {
    local n="$1" pid
    pid="$(node_pid "$n")" || return 0
    say "stopping node $n (pid $pid)"
    ctl "$n" -q stop </dev/null >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 60)) killed=""
    while alive "$pid" || listening "$n"; do
        if ((SECONDS >= deadline)); then
            [[ -z "$killed" ]] || fail "node $n (pid $pid) still holds its ports after SIGKILL"
            say "node $n did not stop within 60s: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            killed=1
            deadline=$((SECONDS + 10))
        fi
        sleep 0.2
    done
}

cmd_stop() {
    local n pids=()
    [[ -d "$DIR" ]] || {
        say "no cluster at $DIR"
        return 0
    }
    for n in "${NODES[@]}"; do
        stop_node "$n" &
        pids+=("$!")
    done
    local status=0 pid
    for pid in "${pids[@]}"; do
        wait "$pid" || status=1
    done
    for n in "${NODES[@]}"; do
        if node_pid "$n" >/dev/null; then
            fail "node $n still runs"
        fi
    done
    say "cluster stopped"
    return "$status"
}

cmd_status() {
    local n pid healthy=0 info running plugins label
    for n in "${NODES[@]}"; do
        label="node $n ($(node_name "$n"), AMQP 127.0.0.1:$(amqp_port "$n"))"
        if ! pid="$(node_pid "$n")"; then
            say "$label: not running"
            healthy=1
            continue
        fi
        info="$(node_info "$n")"
        if [[ "$info" != running* ]]; then
            say "$label: VM $pid up, RabbitMQ ${info:-not answering}"
            healthy=1
            continue
        fi
        read -r _ running plugins <<<"$info"
        [[ "$plugins" == "[]" ]] && plugins=none
        say "$label: running (pid $pid), sees $running of ${#NODES[@]} nodes running, plugins: $plugins"
        [[ "$running" == "${#NODES[@]}" && "$plugins" == none ]] || healthy=1
    done
    return "$healthy"
}

cmd_clean() {
    cmd_stop
    [[ -d "$DIR" ]] || return 0
    # Only what this script wrote: the run folder may be one the user chose.
    rm -rf "$DIR/home" "$DIR/rabbitmq-env.conf" "$DIR"/node-[1-3]
    rmdir "$DIR" 2>/dev/null || true
    say "removed the cluster's files from $DIR"
}

usage() {
    say "usage: $0 start | stop | status | kill-node N | start-node N | clean" >&2
    exit 2
}

main() {
    SBIN="$(find_sbin)"
    case "${1:-}" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        kill-node)
            check_node_number "${2:-}"
            cmd_kill_node "$2"
            ;;
        start-node)
            check_node_number "${2:-}"
            cmd_start_node "$2"
            ;;
        clean) cmd_clean ;;
        *) usage ;;
    esac
}

# On one line: bash has read the whole script before it runs, so a script
# changed meanwhile (a checkout) does not change what a long start does.
main "$@"; exit
