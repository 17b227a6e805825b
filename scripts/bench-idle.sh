#!/usr/bin/env bash
# Memory per idle WebSocket connection on a fresh embedded im-service:
# the server's RSS once every connection is open, minus its RSS before,
# over the connections. Loopback only; needs an open-file limit above
# USERS × PER_USER (+ some).
#
#   scripts/bench-idle.sh [USERS, default 2500] [connections per user, default 2]
#
# With two connections per user the second costs what the first does, so
# the figure is the connection's rather than the user's (BENCHMARKS.md,
# "Memory per idle connection").
set -euo pipefail
cd "$(dirname "$0")/.."
users=${1:-2500}
per_user=${2:-2}
connections=$((users * per_user))
cargo build --release -q -p im-service -p imctl
work=$(mktemp -d)
IM_DATA_DIR="$work/data" LOG_LEVEL=warn LIMIT_NEW_CONNECTIONS_PER_IP=0 target/release/im-service &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -fs http://127.0.0.1:8094/ready >/dev/null 2>&1 && break; sleep 0.1; done
rss() { awk '/VmRSS/{print $2}' "/proc/$server/status"; }
# A short run first, so the RSS before counts a server that has served.
target/release/imctl --data-dir "$work/data" bench --no-progress --users 10 --rate 10 --duration 1 --warmup 0 >/dev/null
before=$(rss)
target/release/imctl --data-dir "$work/data" bench --no-progress --users "$users" --connections-per-user "$per_user" \
  --rate 10 --duration 8 --warmup 0 --setup-concurrency 64 >"$work/bench.txt" &
bench=$!
echo "opening $connections connections..."
for _ in $(seq 120); do
  (( $(ls "/proc/$server/fd" | wc -l) > connections )) && break
  sleep 0.5
done
sleep 2
open=$(ls "/proc/$server/fd" | wc -l)
after=$(rss)
wait "$bench"
echo "connections $connections (server fds $open): RSS ${before} kB -> ${after} kB," \
  "$(( (after - before) * 1024 / connections )) bytes per connection"
grep -E "^check" "$work/bench.txt"
