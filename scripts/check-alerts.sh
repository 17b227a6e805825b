#!/usr/bin/env bash
# Checks the Prometheus alerting rules (deploy/prometheus/alerts.yaml):
# - `promtool check rules` (syntax, PromQL, templates) and `promtool check
#   config` of the example deploy/prometheus/prometheus.yml;
# - `promtool test rules` (deploy/prometheus/alerts_test.yaml);
# - that the tests show every alert both firing and not firing;
# - that every runbook_url anchor is a heading of docs/runbooks.md;
# - that every query of the Grafana dashboard (deploy/grafana/im-service.json)
#   is valid PromQL (promtool check rules on them as recording rules; that
#   each names a metric the binaries export is the e2e test `observability`).
# Installs promtool from Debian's `prometheus`
# package when it is missing, without leaving that package's Prometheus
# server running or enabled (it would listen on 9090, the default
# METRICS_PORT of the IM processes).
#
#   scripts/check-alerts.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RULES=deploy/prometheus/alerts.yaml
TESTS=deploy/prometheus/alerts_test.yaml
CONFIG=deploy/prometheus/prometheus.yml
DASHBOARD=deploy/grafana/im-service.json
RUNBOOKS=docs/runbooks.md

log() { printf '==> %s\n' "$*" >&2; }

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Stops and disables the server that Debian's prometheus package runs as a
# service: it is promtool we want, not a Prometheus on port 9090.
keep_server_off() {
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  elif command -v deb-systemd-helper >/dev/null 2>&1; then
    # No systemd running (a container): drop the enablement the package
    # recorded, so a later boot with systemd does not start it either.
    $SUDO deb-systemd-helper disable prometheus.service >/dev/null 2>&1 || true
  fi
  if [ -x /etc/init.d/prometheus ]; then
    $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    command -v update-rc.d >/dev/null 2>&1 && { $SUDO update-rc.d prometheus disable >/dev/null 2>&1 || true; }
  fi
  # Whatever started it, the package's server runs as user prometheus with
  # this config; none of the IM processes is such a one.
  local pids
  pids=$(pgrep -u prometheus -x prometheus || true)
  if [ -n "$pids" ]; then
    log "stopping the Prometheus server the package started (pid $pids)"
    # shellcheck disable=SC2086
    $SUDO kill $pids
  fi
}

install_promtool() {
  log "promtool is missing: installing Debian's prometheus package"
  # Forbid maintainer scripts to start services during this install
  # (policy-rc.d, honoured by invoke-rc.d and deb-systemd-invoke); only when
  # the machine has no policy of its own, which is left alone.
  local policy=/usr/sbin/policy-rc.d added_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    added_policy=1
    # shellcheck disable=SC2064
    trap "$SUDO rm -f $policy" EXIT
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus
  if [ -n "$added_policy" ]; then
    $SUDO rm -f "$policy"
    trap - EXIT
  fi
  keep_server_off
}

command -v promtool >/dev/null 2>&1 || install_promtool
if ! command -v jq >/dev/null 2>&1; then
  log "installing jq (reads the dashboard's queries)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends jq
fi
log "$(promtool --version 2>&1 | head -n 1)"

log "promtool check rules $RULES"
promtool check rules "$RULES"

log "promtool check config $CONFIG"
promtool check config "$CONFIG"

log "promtool test rules $TESTS"
promtool test rules "$TESTS"

failed=0
alerts=$(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\).*/\1/p' "$RULES")
[ -n "$alerts" ] || { echo "no alert found in $RULES" >&2; exit 1; }

log "every alert tested firing and not firing"
# For each `alertname:` of the tests: does an `exp_alerts: []` (not firing)
# or an `exp_labels:` (firing) follow before the next one?
tested=$(awk '
  /^ *alertname:/ { name = $2; next }
  /^ *exp_alerts: *\[\] *$/ { if (name != "") print name, "quiet"; next }
  /^ *- exp_labels:/ { if (name != "") print name, "fires" }
' "$TESTS" | sort -u)
for alert in $alerts; do
  for outcome in fires quiet; do
    if ! grep -qx "$alert $outcome" <<<"$tested"; then
      echo "FAILED: $TESTS has no case where $alert $( [ $outcome = fires ] && echo fires || echo 'does not fire')" >&2
      failed=1
    fi
  done
done

log "every runbook_url anchor is a heading of $RUNBOOKS"
# GitHub's anchor of a heading: lower case, punctuation other than - and _
# dropped, spaces as -.
anchors=""
if [ -f "$RUNBOOKS" ]; then
  anchors=$(sed -n 's/^#\{1,6\} \(.*\)$/\1/p' "$RUNBOOKS" \
    | tr '[:upper:]' '[:lower:]' | sed 's/[^a-z0-9 _-]//g; s/ /-/g')
else
  echo "FAILED: $RUNBOOKS is missing" >&2
  failed=1
fi
while read -r alert url; do
  anchor=${url##*#}
  if [ "$url" = "$anchor" ] || ! grep -qx -- "$anchor" <<<"$anchors"; then
    echo "FAILED: $alert: runbook_url $url has no heading #$anchor in $RUNBOOKS" >&2
    failed=1
  fi
done < <(awk '
  /^ *- alert:/ { name = $3 }
  /^ *runbook_url:/ { url = $2; gsub(/\047|"/, "", url); print name, url; name = "" }
' "$RULES")
# Every alert has one.
missing=$(comm -23 <(tr ' ' '\n' <<<"$alerts" | sort) \
  <(awk '/^ *- alert:/ { name = $3 } /^ *runbook_url:/ { print name }' "$RULES" | sort))
if [ -n "$missing" ]; then
  echo "FAILED: alerts without a runbook_url: $missing" >&2
  failed=1
fi

log "every query of $DASHBOARD is valid PromQL"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Grafana's variables replaced by values Prometheus accepts.
{
  printf 'groups:\n  - name: dashboard\n    rules:\n'
  jq -r '[.panels[] | .targets[]? | .expr] | to_entries[]
         | "      - record: dashboard:query_\(.key)\n        expr: \(.value
             | gsub("\\$__rate_interval"; "5m") | gsub("\\$job"; ".*") | gsub("\\$instance"; ".*") | @json)"' \
    "$DASHBOARD"
} >"$work/dashboard_rules.yaml"
if ! promtool check rules "$work/dashboard_rules.yaml" >"$work/out" 2>&1; then
  cat "$work/out" >&2
  echo "FAILED: a query of $DASHBOARD is not valid PromQL (numbered in panel order above)" >&2
  failed=1
fi

[ "$failed" -eq 0 ] || exit 1
log "alerting rules OK: $(wc -w <<<"$alerts") alerts"
