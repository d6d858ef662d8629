#!/usr/bin/env bash
# Makes sure PostgreSQL and Redis answer on 127.0.0.1, starting the machine's own
# instances when they are down, and prints the URLs the tests read:
#   eval "$(scripts/test-services.sh)"
# Tests that need these services skip (and say so) when the URLs are not set.
set -euo pipefail

pg_url="${LIVECHAT_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
redis_url="${LIVECHAT_TEST_REDIS_URL:-redis://127.0.0.1:6379/}"

wait_for() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "$what did not come up within 30 s" >&2
  return 1
}

if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  echo "PostgreSQL is down: starting it" >&2
  if command -v pg_ctlcluster >/dev/null; then
    for version in /etc/postgresql/*; do
      pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start >&2 || true
    done
  fi
  wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432 -q
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "Redis is down: starting it" >&2
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "${TMPDIR:-/tmp}" --logfile "${TMPDIR:-/tmp}/livechat-redis.log" >&2
  wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
fi

echo "export LIVECHAT_TEST_POSTGRES_URL='$pg_url'"
echo "export LIVECHAT_TEST_REDIS_URL='$redis_url'"
