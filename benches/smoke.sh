#!/usr/bin/env bash
# A short run of the load generator against a debug livechat-server with its default
# limits (so at a rate under the send budgets): checks that the instruments work
# (every message acked, every broadcast delivered), not how fast.
set -euo pipefail
cd "$(dirname "$0")/.."
# The same features as `cargo test --workspace --all-features`, so CI reuses that build.
cargo build -q --all-features -p livechat-server -p livechat-loadgen
work=$(mktemp -d)
admin=smoke-admin-token-0123456789
secret=smoke-jwt-secret-0123456789-0123456789
target/debug/livechat-server --bind 127.0.0.1:0 --database-url "sqlite://$work/smoke.db" \
  --admin-token "$admin" --jwt-secret "$secret" --demo false \
  --connect-burst-per-ip 1000 --max-connections-per-ip 1000 >"$work/out" 2>"$work/log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  url=$(sed -n 's/^livechat listening on //p' "$work/out")
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { cat "$work/log"; echo "the server did not start"; exit 1; }
line=$(target/debug/livechat-loadgen --url "$url" --admin-token "$admin" --jwt-secret "$secret" \
  --clients 20 --workspaces 2 --contacts 4 --senders 4 --rate 20 --duration 2 --warmup 1 \
  --server-pid "$pid" --label smoke)
echo "$line"
python3 - "$line" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["acked_per_sec"] > 0, "nothing was acked"
assert r["delivery_ratio"] == 1.0, f"deliveries lost: ratio {r['delivery_ratio']}"
assert not r["errors"], f"errors: {r['errors']}"
PY
