#!/usr/bin/env bash
# The project's test command (README "Run the tests"): installs what the build
# needs on a fresh Debian machine, installs and starts the real servers
# (scripts/servers.sh: MariaDB, Redis, etcd, a Kafka-protocol broker), then
# runs every test suite of the workspace.
#
#   scripts/test.sh            all suites
#   scripts/test.sh -E 'test(e2e)'   extra arguments go to cargo nextest
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

need_apt=()
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/timestamp.proto ] || need_apt+=(libprotobuf-dev)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# rdkafka builds its vendored librdkafka with cmake and needs curl's header.
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] || need_apt+=(libcurl4-openssl-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing build packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

log "starting the real servers the production suites use"
scripts/servers.sh

log "checking formatting"
cargo fmt --all -- --check

log "building"
cargo build --workspace --all-targets --locked

log "running the tests"
# The end-to-end tests start the real binaries; build them first (above) so
# their start-up time is not a cargo build.
cargo nextest run --workspace --locked --no-fail-fast "$@"
