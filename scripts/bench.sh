#!/usr/bin/env bash
# Runs the BENCHMARKS.md scenarios against a fresh embedded im-service each:
# release build, loopback, server CPU read from /proc by `imctl bench
# --server-pid`. Prints every summary; figures go in BENCHMARKS.md by hand.
#
#   scripts/bench.sh [seconds per scenario, default 10]
#
# SCENARIOS=groups runs only the group scenarios (groups of 50 at 4,000 msg/s,
# a group of 5,000 at 40 and at 10 msg/s); SCENARIOS=private only the others;
# SCENARIOS=sat-ring only the first (max throughput, each user one peer).
# SCENARIOS=rates: issue 17's loads — 200 users in fixed pairs (user i and
# i+100), 64-byte bodies — at saturation (closed loop, 8 in flight), 2,000/s
# and 10,000/s (open loop), RUNS times each (default 3), a fresh server each.
# The server inherits the environment: e.g. FILTER_ENABLED=true
# FILTER_WORDLIST_PATH=list.txt benchmarks with the sensitive-word filter.
# BENCH_ARGS are added to every `imctl bench` (e.g. BENCH_ARGS=--text: text
# bodies, which the filter reads; binary ones pass it untouched).
# With TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE (a certificate for
# localhost) the server speaks TLS and imctl connects with wss:// and https://.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
cargo build --release -q -p im-service -p imctl
work=$(mktemp -d)
probe=(curl -fs http://127.0.0.1:8094/ready)
urls=()
# The commits per window come from /metrics (plain HTTP only).
metrics=(--server-metrics http://127.0.0.1:8094/metrics)
if [[ -n "${TLS_CERT_FILE:-}" ]]; then
  probe=(curl -fs --cacert "$TLS_CA_FILE" https://localhost:8094/ready)
  urls=(--ca "$TLS_CA_FILE" --ws-url wss://localhost:8093/ws --grpc-url https://localhost:9094
        --im-service-url https://localhost:9094)
  metrics=()
fi
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

run() {
  local name=$1; shift
  rm -rf "$work/data"
  IM_DATA_DIR="$work/data" LOG_LEVEL=warn target/release/im-service &
  server=$!
  for _ in $(seq 100); do "${probe[@]}" >/dev/null 2>&1 && break; sleep 0.1; done
  echo "=== $name: imctl bench $*"
  target/release/imctl --data-dir "$work/data" "${urls[@]}" bench --no-progress --duration "$duration" --warmup 2 \
    --server-pid "$server" "${metrics[@]}" ${BENCH_ARGS:-} "$@"
  kill "$server"; wait "$server" || true
}

scenarios=${SCENARIOS:-private groups}
if [[ " $scenarios " == *" rates "* ]]; then
  pairs=(--users 200 --pairing pairs --body-size 64)
  for i in $(seq "${RUNS:-3}"); do
    run "saturation, fixed pairs, run $i" "${pairs[@]}" --closed-loop --window 8
    run "2000/s, fixed pairs, run $i" "${pairs[@]}" --rate 2000
    run "10000/s, fixed pairs, run $i" "${pairs[@]}" --rate 10000
  done
fi
if [[ " $scenarios " == *" sat-ring "* ]]; then
  run "max throughput, each user one peer" --users 200 --closed-loop --window 8 --pairing ring
fi
if [[ " $scenarios " == *" private "* ]]; then
  run "max throughput, each user one peer" --users 200 --closed-loop --window 8 --pairing ring
  run "max throughput, random peers" --users 200 --closed-loop --window 8 --pairing random
  run "latency at 5000/s, each user one peer" --users 200 --rate 5000 --pairing ring
  run "latency at 5000/s, random peers" --users 200 --rate 5000 --pairing random
  run "latency at 1000/s, random peers" --users 200 --rate 1000 --pairing random
fi
if [[ " $scenarios " == *" groups "* ]]; then
  run "fan-out, 4 groups of 50, 4000 msg/s" --group-size 50 --groups 4 --senders 5 --rate 4000
  run "fan-out, a group of 5000, 40 msg/s" --group-size 5000 --senders 5 --rate 40
  run "latency, a group of 5000, 10 msg/s" --group-size 5000 --senders 5 --rate 10
fi
