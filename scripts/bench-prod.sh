#!/usr/bin/env bash
# Runs the production-mode scenarios of BENCHMARKS.md: for each one a fresh
# system on loopback — im-user, one im-service, one im-gateway, with
# deploy/config.yaml against MariaDB, Redis, etcd and Kafka (scripts/servers.sh
# starts them if down), a new database and cluster name each time — then
# `imctl bench` through the gateway's WebSocket. Prints every summary and the
# CPU of each process over the measured window (/proc/PID/stat, utime+stime),
# then a table of all runs with the median of repeated scenarios. Figures go
# in BENCHMARKS.md by hand.
#
#   scripts/bench-prod.sh [seconds per scenario, default 10]
#
# Environment (all optional):
#   LATENCY_RUNS=3        runs of the 2,000/s latency scenario
#   SCENARIOS="sat-ring sat-random lat-2000"   which scenarios, in this order
#                         (also rates: issue 17's loads — 200 users in fixed
#                         pairs, user i and i+100, 64-byte bodies — at
#                         saturation (closed loop, 8 in flight), 2,000/s and
#                         10,000/s, RUNS times each (default 3), in turn;
#                         pairs-2000: only its 2,000/s load, RUNS times;
#                         lat-2000-ring: 2,000/s with one peer per user;
#                         group-50: 4 groups of 50, 5 senders each, 4,000 msg/s
#                         (group-50-5000: at 5,000 msg/s);
#                         group-5000: one group of 5,000, 5 senders, 40 msg/s;
#                         group-5000-10: the same at 10 msg/s)
#   USERS=200             users per scenario
#   PERF_DIR=DIR          also `perf record -g` im-service and the gateway for
#                         PERF_SECONDS (default 5) from the start of each
#                         measured window into DIR (perf costs CPU: the figures
#                         of those runs are disturbed)
#   BENCH_RESULTS=FILE    append one JSON object per run to FILE
#   METRICS_DIR=DIR       keep each run's /metrics of im-service and the
#                         gateway (the whole run, warm-up included) in DIR
#   BIN_DIR=DIR           run the release binaries in DIR (im-user,
#                         im-service, im-gateway, imctl) instead of building
#                         this checkout: for comparing two builds in one hour
#
# Ports (fixed by deploy/config.yaml; the script stops if one is taken):
# im-user gRPC 9096, HTTP 8096, metrics 9196; im-service gRPC 9094, HTTP 8094,
# metrics 9090; im-gateway WebSocket 8093, push 9093, HTTP 8095, metrics 9195.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
warmup=2 # the first progress line of imctl comes 1 s after sending starts
latency_runs=${LATENCY_RUNS:-3}
scenarios=${SCENARIOS:-sat-ring sat-random lat-2000}
users=${USERS:-200}
perf_seconds=${PERF_SECONDS:-5}
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}

log() { printf '==> %s\n' "$*" >&2; }

if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release -q -p im-service -p imctl
fi
scripts/servers.sh >/dev/null

work=$(mktemp -d /tmp/bench-prod.XXXXXX)
pids=()
db_name="" cluster=""

stop_system() {
  local pid i
  # Reverse start order: the gateway first, im-user last.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    if kill -TERM "$pid" 2>/dev/null; then
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  pids=()
  if [ -n "$db_name" ]; then
    mariadb -h 127.0.0.1 -P 3306 -u root -e "DROP DATABASE IF EXISTS \`$db_name\`" || true
  fi
  if [ -n "$cluster" ]; then
    redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "$cluster:*" | xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 unlink >/dev/null || true
    ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:2379 del --prefix "/$cluster/" >/dev/null 2>&1 || true
  fi
  db_name="" cluster=""
}
trap 'stop_system; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 9096 8096 9196 9094 8094 9090 8093 9093 8095 9195; do
  if port_open "$port"; then
    log "127.0.0.1:$port is taken (another im-service?); stop it first"
    exit 1
  fi
done

# Starts one process in the background; its pid is appended to pids.
start() {
  local name=$1; shift
  env "$@" LOG_LEVEL=warn "$bin/$name" >>"$work/$name.log" 2>&1 &
  pids+=("$!")
}

wait_ready() {
  local name=$1 port=$2 pid=$3
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited during start-up:"; tail -20 "$work/$name.log" >&2; exit 1
    fi
    sleep 0.1
  done
  log "$name not ready after 30 s:"; curl -s "http://127.0.0.1:$port/ready" >&2 || true
  tail -20 "$work/$name.log" >&2; exit 1
}

start_system() {
  db_name=im_bench_$RANDOM$RANDOM cluster=bench$RANDOM$RANDOM
  rm -rf "$work/user" "$work/node1" "$work/gw1"
  # Topics and consumer groups of this run alone: the broker is shared, and a
  # fresh deployment must not read an earlier run's group_msg (its group ids
  # name other groups in this run's new database).
  local common=(IM_CONFIG=deploy/config.yaml JWT_SECRET="$jwt" DB_NAME="$db_name" CLUSTER_NAME="$cluster"
    KAFKA_TOPIC_GROUP_MSG="$cluster.group_msg" KAFKA_TOPIC_OFFLINE_MSG="$cluster.offline_msg"
    KAFKA_TOPIC_MEMBERSHIP_CHANGE="$cluster.membership_change" KAFKA_GROUP_ID="$cluster.fanout"
    KAFKA_CONSUMER_GROUP_ID="$cluster.offline-worker")
  start im-user "${common[@]}" IM_DATA_DIR="$work/user" SERVER_HTTP_PORT=8096 METRICS_PORT=9196
  user_pid=${pids[-1]}
  wait_ready im-user 8096 "$user_pid"
  start im-service "${common[@]}" IM_DATA_DIR="$work/node1"
  svc_pid=${pids[-1]}
  wait_ready im-service 8094 "$svc_pid"
  start im-gateway "${common[@]}" IM_DATA_DIR="$work/gw1" SERVER_HTTP_PORT=8095 METRICS_PORT=9195
  gw_pid=${pids[-1]}
  wait_ready im-gateway 8095 "$gw_pid"
}
jwt=$(head -c 32 /dev/urandom | base64)

# CPU snapshot, one line: "<time s> <machine busy ticks> <machine total ticks> <ticks per watched pid...>".
# Built-ins only (read, no fork) so that it takes microseconds.
ticks_of() {
  local stat rest
  if read -r stat <"/proc/$1/stat" 2>/dev/null; then
    rest=${stat##*) }               # fields from 3 on: the name may hold spaces
    read -r -a f <<<"$rest"         # f[11] = utime (field 14), f[12] = stime (field 15)
    echo $((f[11] + f[12]))
  else
    echo -1
  fi
}
snapshot() {
  local line cpu user nice system idle iowait irq softirq steal out
  read -r cpu user nice system idle iowait irq softirq steal _ </proc/stat
  out="$EPOCHREALTIME $((user + nice + system + irq + softirq)) $((user + nice + system + idle + iowait + irq + softirq))"
  for pid in "${watch_pids[@]}"; do out+=" $(ticks_of "$pid")"; done
  echo "$out"
}

# Reads imctl's stderr: progress lines are kept in a log, anything else is
# shown. The first progress line comes 1 s after sending starts, so the
# measured window starts warmup-1 s after it; the snapshots bracket it.
sampler() {
  local line t0 started=""
  while IFS= read -r line; do
    if [ -z "$started" ] && [[ $line =~ ^\ *[0-9.]+s\ (warmup|measure) ]]; then
      started=1
      t0=$EPOCHREALTIME
      sleep_until "$t0" $((warmup - 1))
      snapshot >"$work/cpu.before"
      db_requests >"$work/db.before"
      if [ -n "${PERF_DIR:-}" ]; then
        mkdir -p "$PERF_DIR"
        perf record -q -g -p "$svc_pid" -o "$PERF_DIR/$tag-im-service.data" -- sleep "$perf_seconds" >/dev/null 2>&1 &
        perf record -q -g -p "$gw_pid" -o "$PERF_DIR/$tag-im-gateway.data" -- sleep "$perf_seconds" >/dev/null 2>&1 &
      fi
      sleep_until "$t0" $((warmup - 1 + duration))
      snapshot >"$work/cpu.after"
      db_requests >"$work/db.after"
    fi
    if [[ $line =~ ^\ *[0-9.]+s\ (warmup|measure|drain) ]]; then
      echo "$line" >>"$work/progress.log"
    else
      echo "$line" >&2
    fi
  done
  wait
}
# MariaDB's request counters: "<Questions> <Com_admin_commands> <Com_commit>".
# Questions counts statements, not pings; Com_admin_commands counts pings.
# Prints nothing when the server cannot be asked (the summary then omits them).
db_requests() {
  mariadb -h 127.0.0.1 -P 3306 -u root -N -B -e "SHOW GLOBAL STATUS WHERE Variable_name IN \
    ('Questions', 'Com_admin_commands', 'Com_commit')" 2>/dev/null |
    awk '{ v[$1] = $2 } END { if (NR == 3) print v["Questions"], v["Com_admin_commands"], v["Com_commit"] }'
}
sleep_until() { # t0 offset_seconds
  local left
  left=$(awk -v t0="$1" -v off="$2" -v now="$EPOCHREALTIME" 'BEGIN { d = t0 + off - now; printf "%.6f", (d > 0 ? d : 0) }')
  sleep "$left"
}

# The pid listening on 127.0.0.1:PORT (tests may run more servers of the same name on other ports).
listener() {
  local pid
  pid=$(ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  echo "${pid:-$(pgrep -xo "$2" || echo 0)}"
}

# Waits until the consumer group $1 of im-service reports a lag for every
# partition of its topic (im_kafka_consumer_lag, read every 5 s).
wait_assigned() {
  local assigned=0
  for _ in $(seq 120); do
    assigned=$(curl -fs http://127.0.0.1:8094/metrics 2>/dev/null | grep -c "^im_kafka_consumer_lag{group=\"$1\"" || true)
    [ "$assigned" -ge 32 ] && return 0
    sleep 1
  done
  log "consumer group $1 holds $assigned of 32 partitions after 120 s; measuring anyway"
}

results=$work/results.jsonl
: >"$results"

run() {
  local name=$1; tag=$2; shift 2
  start_system
  watch_names=(im-service im-gateway im-user mariadbd redis-server etcd tansu)
  watch_pids=("$svc_pid" "$gw_pid" "$user_pid" "$(listener 3306 mariadbd)" "$(listener 6379 redis-server)"
    "$(listener 2379 etcd)" "$(listener 9092 tansu)")
  echo
  # A group workload sizes itself (--group-size); the others take --users.
  local size=(--users "$users")
  [[ " $* " == *" --group-size "* ]] && size=()
  echo "=== $name: imctl bench ${size[*]} $*"
  # The fan-out's consumer group must hold every partition before the load
  # starts: its members join one after the other, and the broker settles each
  # join for a while (tansu: half the session timeout); a group message sent
  # meanwhile waits for it, which is start-up, not fan-out, latency.
  if [ ${#size[@]} -eq 0 ]; then wait_assigned "$cluster.fanout"; fi
  rm -f "$work/cpu.before" "$work/cpu.after" "$work/db.before" "$work/db.after" "$work/progress.log"
  local rc=0
  "$bin/imctl" --grpc-url http://127.0.0.1:9096 --ws-url ws://127.0.0.1:8093/ws --data-dir "$work/user" \
    bench --json --duration "$duration" --warmup "$warmup" "${size[@]}" --server-pid "$svc_pid" "$@" \
    2>&1 >"$work/summary.json" | sampler || rc=$?
  curl -fs http://127.0.0.1:8094/metrics >"$work/metrics.txt" 2>/dev/null || : >"$work/metrics.txt"
  if [ -n "${METRICS_DIR:-}" ]; then
    local kept=$METRICS_DIR/$tag-$(date +%H%M%S)
    mkdir -p "$METRICS_DIR"
    cp "$work/metrics.txt" "$kept-im-service.txt"
    curl -fs http://127.0.0.1:8095/metrics >"$kept-im-gateway.txt" 2>/dev/null || true
  fi
  stop_system
  if [ ! -s "$work/summary.json" ] || [ ! -s "$work/cpu.after" ]; then
    log "imctl bench failed (exit $rc)"; exit 1
  fi
  python3 - "$name" "$tag" "$work/summary.json" "$work/cpu.before" "$work/cpu.after" "${watch_names[*]}" "$results" "$work/metrics.txt" "$work/db.before" "$work/db.after" <<'EOF'
import json, os, sys
name, tag, summary_path, before_path, after_path, names, results, metrics_path, db_before_path, db_after_path = sys.argv[1:]
s = json.load(open(summary_path))
b = open(before_path).read().split()
a = open(after_path).read().split()
names = names.split()
hz = os.sysconf("SC_CLK_TCK")
wall = float(a[0]) - float(b[0])
busy = (int(a[1]) - int(b[1])) / hz
total = (int(a[2]) - int(b[2])) / hz
cpu = {}
for i, n in enumerate(names):
    t0, t1 = int(b[3 + i]), int(a[3 + i])
    cpu[n] = (t1 - t0) / hz if t0 >= 0 and t1 >= 0 else None
cpu["imctl (load generator)"] = s.get("client_cpu_seconds")
delivered = s["delivered_per_s"] * s["measured_s"]
def ms(us): return f"{us / 1000:.2f} ms"
# A group run reports send -> push to the last member as its end-to-end latency.
e, k = s.get("e2e_latency") or s["fanout_latency"], s["ack_latency"]
print(f"throughput  acked {s['acked_per_s']:,.0f} msg/s, delivered {s['delivered_per_s']:,.0f} msg/s "
      f"(sent {s['sent']}, acked {s['acked']}, delivered {s['delivered']}, errors {s['errors']} {s['errors_by_code'] or ''}, unacked {s['unacked']})")
print(f"end-to-end  p50 {ms(e['p50_us'])}  p90 {ms(e['p90_us'])}  p99 {ms(e['p99_us'])}  p99.9 {ms(e['p999_us'])}  max {ms(e['max_us'])}  (n={e['count']})")
print(f"ack         p50 {ms(k['p50_us'])}  p99 {ms(k['p99_us'])}  max {ms(k['max_us'])}")
check = s["check"]
print("check       " + ("ok: every acked message reached its recipient(s)" if check["ok"] else f"FAILED: {check}"))
imctl_svc = (s.get("server_cpu") or {}).get("cpu_seconds")
print(f"cpu over the measured window ({wall:.2f} s wall by this script; imctl's measured {s['measured_s']:.2f} s):")
print(f"  {'process':<30}{'cpu s':>8}{'% core':>8}{'µs/delivered':>14}")
def row(label, secs):
    if secs is None:
        print(f"  {label:<30}{'n/a':>8}"); return
    per = secs * 1e6 / delivered if delivered else float("nan")
    print(f"  {label:<30}{secs:8.2f}{100 * secs / wall:8.0f}{per:14.1f}")
for n, secs in cpu.items():
    row(n, secs)
known = sum(v for v in cpu.values() if v)
row("everything else", busy - known)
print(f"  {'-' * 60}")
system = (cpu["im-service"] or 0) + (cpu["im-gateway"] or 0)
row("system: im-service+gw", system)
row("+ user, db, redis, etcd, kafka", system + sum(cpu[n] or 0 for n in ("im-user", "mariadbd", "redis-server", "etcd", "tansu")))
row("machine busy", busy)
print(f"  machine: {busy / wall:.2f} of {total / wall:.0f} cores busy; im-service by imctl: {imctl_svc} s (check of the window alignment)")
metrics = {}
for line in open(metrics_path):
    if line.startswith("im_commit_batch_size_sum") or line.startswith("im_commit_batch_size_count"):
        key, value = line.split()[:2]
        metrics[key.split("{")[0]] = float(value)
batch = None
if metrics.get("im_commit_batch_size_count"):
    batch = metrics["im_commit_batch_size_sum"] / metrics["im_commit_batch_size_count"]
    print(f"commits     {metrics['im_commit_batch_size_count']:.0f}, {batch:.1f} messages per commit on average (whole run, warm-up included; im-service /metrics)")
db = None
try:
    db0, db1 = (list(map(int, open(p).read().split())) for p in (db_before_path, db_after_path))
    if len(db0) == len(db1) == 3 and delivered:
        db = {k: (y - x) / delivered for k, x, y in zip(("questions", "pings", "commits"), db0, db1)}
        print(f"mariadb     per delivered message: {db['questions']:.2f} statements, {db['pings']:.2f} pings, "
              f"{db['commits']:.3f} commits (global counters over the measured window)")
except (OSError, ValueError):
    pass
rec = {"name": name, "tag": tag, "db_requests_per_msg": db, "acked_per_s": s["acked_per_s"], "delivered_per_s": s["delivered_per_s"],
       "p50_ms": e["p50_us"] / 1e3, "p90_ms": e["p90_us"] / 1e3, "p99_ms": e["p99_us"] / 1e3, "p999_ms": e["p999_us"] / 1e3,
       "ack_p99_ms": k["p99_us"] / 1e3, "check_ok": check["ok"], "errors": s["errors"], "wall_s": wall,
       "commit_batch": batch, "cpu_s": cpu, "machine_busy_s": busy, "machine_cores": total / wall,
       "us_per_msg": {n: (v * 1e6 / delivered if (v is not None and delivered) else None) for n, v in cpu.items()},
       "system_us_per_msg": system * 1e6 / delivered if delivered else None,
       "summary": s}
with open(results, "a") as f:
    f.write(json.dumps(rec) + "\n")
EOF
  if [ -n "${BENCH_RESULTS:-}" ]; then tail -n 1 "$results" >>"$BENCH_RESULTS"; fi
  [ "$rc" -eq 0 ] || log "imctl bench exited $rc"
}

# Issue 17's workload: 200 users in fixed pairs (i and i+100), 64-byte bodies.
pairs=(--pairing pairs --body-size 64)
for scenario in $scenarios; do
  case $scenario in
    sat-ring) run "saturation, one peer" sat-ring --closed-loop --window 8 --pairing ring ;;
    sat-random) run "saturation, random peers" sat-random --closed-loop --window 8 --pairing random ;;
    rates)
      for i in $(seq "${RUNS:-3}"); do
        run "saturation, fixed pairs (run $i)" pairs-sat --closed-loop --window 8 "${pairs[@]}"
        run "2,000/s, fixed pairs (run $i)" pairs-2000 --rate 2000 "${pairs[@]}"
        run "10,000/s, fixed pairs (run $i)" pairs-10000 --rate 10000 "${pairs[@]}"
      done
      ;;
    pairs-2000) # issue 17's 2,000/s load alone, RUNS times
      for i in $(seq "${RUNS:-3}"); do
        run "2,000/s, fixed pairs (run $i)" pairs-2000 --rate 2000 "${pairs[@]}"
      done
      ;;
    lat-2000)
      for i in $(seq "$latency_runs"); do
        run "2,000/s, random peers (run $i of $latency_runs)" lat-2000 --rate 2000 --pairing random
      done
      ;;
    lat-2000-ring) # diagnostic: 200 conversations, so no new conversation after the warm-up
      for i in $(seq "$latency_runs"); do
        run "2,000/s, one peer (run $i of $latency_runs)" lat-2000-ring --rate 2000 --pairing ring
      done
      ;;
    group-50) run "groups of 50, 4,000 msg/s" group-50 --group-size 50 --groups 4 --senders 5 --rate 4000 ;;
    group-50-5000) run "groups of 50, 5,000 msg/s" group-50-5000 --group-size 50 --groups 4 --senders 5 --rate 5000 ;;
    group-5000) run "a group of 5,000, 40 msg/s" group-5000 --group-size 5000 --senders 5 --rate 40 --settle 15 ;;
    group-5000-10) run "a group of 5,000, 10 msg/s" group-5000-10 --group-size 5000 --senders 5 --rate 10 --settle 15 ;;
    *) log "unknown scenario $scenario (sat-ring, sat-random, rates, pairs-2000, lat-2000, lat-2000-ring, group-50, group-50-5000, group-5000, group-5000-10)"; exit 2 ;;
  esac
done

echo
echo "=== all runs ($duration s measured each; µs = CPU per delivered message — per member delivery in group runs, latency to the last member there; medians of repeated scenarios last)"
python3 - "$results" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
cols = ["batch", "acked/s", "deliv/s", "p50 ms", "p99 ms", "p99.9 ms", "svc µs", "gw µs", "svc+gw µs", "user µs", "mariadb µs", "redis µs", "kafka µs", "load µs", "busy cores"]
def vals(r):
    u = r["us_per_msg"]
    return [r.get("commit_batch"), r["acked_per_s"], r["delivered_per_s"], r["p50_ms"], r["p99_ms"], r["p999_ms"], u["im-service"], u["im-gateway"], r["system_us_per_msg"],
            u["im-user"], u["mariadbd"], u["redis-server"], u.get("tansu"), u["imctl (load generator)"], r["machine_busy_s"] / r["wall_s"]]
def fmt(v):
    if v is None: return "n/a"
    return f"{v:,.0f}" if v >= 1000 else f"{v:.2f}" if v < 10 else f"{v:.1f}"
print(f"{'scenario':<40}" + "".join(f"{c:>12}" for c in cols) + "  check")
for r in runs:
    print(f"{r['name']:<40}" + "".join(f"{fmt(v):>12}" for v in vals(r)) + ("  ok" if r["check_ok"] else "  FAILED"))
tags = {}
for r in runs:
    tags.setdefault(r["tag"], []).append(r)
for tag, rs in tags.items():
    if len(rs) > 1:
        cols_vals = list(zip(*[vals(r) for r in rs]))
        med = [statistics.median([v for v in c if v is not None]) if any(v is not None for v in c) else None for c in cols_vals]
        print(f"{'median of ' + str(len(rs)) + ' x ' + tag:<40}" + "".join(f"{fmt(v):>12}" for v in med))
EOF
