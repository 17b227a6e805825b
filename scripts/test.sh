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
# The build needs a Rust toolchain and a C compiler (with make and perl, which
# build-essential brings): librdkafka and OpenSSL are built from source by
# their crates, and the .proto files are compiled by protox, in Rust.
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v perl >/dev/null 2>&1 || need_apt+=(perl)
# The browser tests (crates/im-service/tests/e2e/browser.rs) drive headless
# Chromium through chromedriver (and a font, so that the screenshots they save
# can be read).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium fonts-dejavu-core)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing packages for the build and the tests: ${need_apt[*]}"
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

# The deployment files, with the tools each kind has (each script installs
# its own: promtool, kubernetes-validate and checkov, systemd-analyze,
# hadolint, docker-compose).
log "checking the alert rules and the dashboard"
scripts/check-alerts.sh
log "checking the Kubernetes manifests"
scripts/check-k8s.sh
log "checking the systemd units, the Dockerfile and the compose file"
scripts/check-systemd-docker.sh

log "building (with protoc and cmake hidden: the README's run command must not need them)"
# Shadow both tools with commands that fail, so a dependency that starts
# needing one breaks this build instead of a newcomer's.
hidden_tools=$(mktemp -d)
trap 'rm -rf "$hidden_tools"' EXIT
for tool in protoc cmake; do
  printf '#!/bin/sh\necho "%s is hidden from this build: it must not need it" >&2\nexit 127\n' "$tool" >"$hidden_tools/$tool"
  chmod +x "$hidden_tools/$tool"
done
PATH="$hidden_tools:$PATH" env -u PROTOC cargo build --workspace --all-targets --locked

log "running the tests"
# The end-to-end tests start the real binaries; build them first (above) so
# their start-up time is not a cargo build.
cargo nextest run --workspace --locked --no-fail-fast "$@"

# A short run of each fuzz target (fuzz/README.md): libFuzzer, coverage-guided,
# on stable Rust without sanitizers. Skipped when the caller picked tests
# (arguments above): a full run is what CI and a newcomer do.
if [ $# -eq 0 ]; then
  if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install --locked cargo-fuzz@0.13.2
  fi
  fuzz_seconds=${FUZZ_SECONDS:-15}
  for target in client_frame token config word_list; do
    log "fuzzing $target for ${fuzz_seconds} s"
    mkdir -p "fuzz/corpus/$target"
    # Its full output only when it fails (a crash: the input is saved in
    # fuzz/artifacts/$target); the last lines otherwise.
    if ! cargo fuzz run --sanitizer none "$target" "fuzz/corpus/$target" -- \
      -max_total_time="$fuzz_seconds" -max_len=4096 -print_final_stats=1 >"fuzz/$target.log" 2>&1; then
      cat "fuzz/$target.log" >&2
      echo "fuzz target $target failed: the input is in fuzz/artifacts/$target" >&2
      exit 1
    fi
    grep -E "^Done|stat::new_units_added" "fuzz/$target.log"
  done
fi
