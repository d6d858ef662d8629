#!/usr/bin/env bash
# Side-by-side benchmark of livechat-server (SQLite, every ack after a durable commit)
# and the Node.js + socket.io baseline, on this machine: the server pinned to one core,
# the load generator to the other, every scenario RUNS times (default 3), medians and
# ratios printed as the table in BENCHMARKS.md.
#
#   benches/compare.sh                 # every scenario
#   SCENARIOS="a b" RUNS=1 benches/compare.sh
#   TARGETS=livechat SCENARIOS=b RUNS=1 DURATION=5 benches/compare.sh   # a quick look
#   LIVECHAT_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test benches/compare.sh
#   LIVECHAT_SERVER=/tmp/old/livechat-server TARGETS=livechat benches/compare.sh   # another build
#   LIVECHAT_SERVER_ARGS="--commit-batch 256" TARGETS=livechat SCENARIOS=e benches/compare.sh
#
# Needs: cargo, node + npm, taskset, python3. Results (one JSON line per run) are kept
# in target/bench-results/.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-"a b c d e"}
TARGETS=${TARGETS:-"livechat node"}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
DURATION=${DURATION:-10}
LIVECHAT_SERVER=${LIVECHAT_SERVER:-target/release/livechat-server}
LIVECHAT_SERVER_ARGS=${LIVECHAT_SERVER_ARGS:-}
LIVECHAT_PORT=3300
NODE_PORT=3301
ADMIN_TOKEN=bench-admin-token-0123456789
JWT_SECRET=bench-jwt-secret-0123456789-0123456789

echo "== building (release)" >&2
cargo build --release -q -p livechat-server -p livechat-loadgen
(cd benches/baseline/node && npm ci --no-audit --no-fund --silent)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

mkdir -p target/bench-results
results="target/bench-results/$(date +%Y%m%dT%H%M%S).jsonl"
work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  return 1
}

start_livechat() { # $1: database URL
  # shellcheck disable=SC2086
  taskset -c "$SERVER_CPU" "$LIVECHAT_SERVER" \
    --bind "127.0.0.1:$LIVECHAT_PORT" --database-url "$1" \
    --admin-token "$ADMIN_TOKEN" --jwt-secret "$JWT_SECRET" --demo false \
    --rate-limit-per-sec 10000000 --rate-limit-burst 10000000 \
    --socket-rate-limit-per-sec 10000000 --socket-rate-limit-burst 10000000 \
    --workspace-rate-limit-per-sec 10000000 --workspace-rate-limit-burst 10000000 \
    --connect-rate-per-ip 1000000 --connect-burst-per-ip 1000000 \
    --max-connections-per-ip 1000000 --max-connections-per-user 1000000 \
    --max-connections 1000000 $LIVECHAT_SERVER_ARGS >"$work/server.log" 2>&1 &
  server_pid=$!
  wait_port "$LIVECHAT_PORT"
}

start_node() {
  PORT=$NODE_PORT taskset -c "$SERVER_CPU" node benches/baseline/node/server.js >"$work/server.log" 2>&1 &
  server_pid=$!
  wait_port "$NODE_PORT"
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

scenario_args() {
  case "$1" in
    a) echo "--clients 1000 --workspaces 1 --contacts 1 --senders 1 --window 8" ;;
    b) echo "--clients 2000 --workspaces 200 --contacts 1000 --senders 100 --window 8" ;;
    c) echo "--clients 2000 --workspaces 200 --contacts 1000 --senders 100 --rate 3000" ;;
    d) echo "--idle 10000" ;;
    e) echo "--clients 200 --workspaces 20 --contacts 200 --senders 200 --window 16" ;;
  esac
}

measure() { # $1 scenario, $2 target, $3 run, $4 url, $5 setup
  # shellcheck disable=SC2046
  taskset -c "$LOAD_CPU" target/release/livechat-loadgen --url "$4" --setup "$5" \
    --admin-token "$ADMIN_TOKEN" --jwt-secret "$JWT_SECRET" --server-pid "$server_pid" \
    --duration "$DURATION" --label "$1/$2/$3" $(scenario_args "$1") >>"$results"
  echo "   $1 $2 run $3: $(tail -n 1 "$results" | cut -c1-160)..." >&2
}

for scenario in $SCENARIOS; do
  for run in $(seq 1 "$RUNS"); do
    if [[ " $TARGETS " == *" livechat "* ]]; then
      start_livechat "sqlite://$work/bench-$scenario-$run.db"
      measure "$scenario" livechat "$run" "http://127.0.0.1:$LIVECHAT_PORT" livechat
      stop_server
    fi
    if [ "$scenario" = e ]; then
      if [ -n "${LIVECHAT_BENCH_POSTGRES_URL:-}" ]; then
        db="livechat_bench_$(date +%s)_$run"
        psql "$LIVECHAT_BENCH_POSTGRES_URL" -q -c "CREATE DATABASE $db"
        start_livechat "${LIVECHAT_BENCH_POSTGRES_URL%/*}/$db"
        measure e livechat-postgres "$run" "http://127.0.0.1:$LIVECHAT_PORT" livechat
        stop_server
        psql "$LIVECHAT_BENCH_POSTGRES_URL" -q -c "DROP DATABASE $db WITH (FORCE)"
      fi
      continue # the baseline stores nothing: no durable throughput to compare
    fi
    if [[ " $TARGETS " == *" node "* ]]; then
      start_node
      measure "$scenario" node "$run" "http://127.0.0.1:$NODE_PORT" none
      stop_server
    fi
  done
done

python3 benches/summarize.py "$results"
