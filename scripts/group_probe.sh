#!/usr/bin/env bash
# How the broker at 127.0.0.1:9092 moves a consumer group's partitions when a
# member is killed (-9) and started again (docs/resilience.md, recovery
# times): two members of a new group over a new 8-partition topic, a record
# every 50 ms, member b killed after 15 s and started again 20 s later.
# Prints each member's assignments and the longest wait of a record.
#
#   scripts/group_probe.sh NAME ASSIGNOR SESSION_MS STATIC
#   scripts/group_probe.sh coop cooperative-sticky 3000 no
#   scripts/group_probe.sh static range 10000 yes    # group.instance.id per member
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=$1 ASSIGNOR=$2 SESSION=$3 STATIC=$4
cargo build -q -p im-backends --example group_probe
BIN=target/debug/examples/group_probe
DIR=$(mktemp -d)
TOPIC=probe-$NAME-$RANDOM GROUP=probe-group-$NAME-$RANDOM
A=- B=-
if [ "$STATIC" = yes ]; then A=member-a B=member-b; fi
$BIN create "$TOPIC" 8 >/dev/null
$BIN produce "$TOPIC" 8 >/dev/null 2>&1 & PRODUCER=$!
$BIN member "$GROUP" "$TOPIC" $A "$ASSIGNOR" "$SESSION" >"$DIR/a.log" 2>&1 & MEMBER_A=$!
sleep 1
$BIN member "$GROUP" "$TOPIC" $B "$ASSIGNOR" "$SESSION" >"$DIR/b1.log" 2>&1 & MEMBER_B=$!
sleep 15
echo "$(date +%s%3N) KILL" >"$DIR/events"
kill -9 $MEMBER_B
wait $MEMBER_B 2>/dev/null || true
sleep 20
echo "$(date +%s%3N) RESTART" >>"$DIR/events"
$BIN member "$GROUP" "$TOPIC" $B "$ASSIGNOR" "$SESSION" >"$DIR/b2.log" 2>&1 & MEMBER_B=$!
sleep 20
echo "$(date +%s%3N) END" >>"$DIR/events"
kill $MEMBER_A $MEMBER_B $PRODUCER
wait 2>/dev/null || true
python3 - "$DIR" <<'PY'
import os, sys
d = sys.argv[1]
ev = {l.split()[1]: int(l.split()[0]) for l in open(d + '/events')}
received = []
for f in ['a.log', 'b1.log', 'b2.log']:
    for l in open(os.path.join(d, f)):
        p = l.split()
        if len(p) > 4 and p[1] == 'RECV':
            received.append((int(p[0]), int(p[4])))
        elif len(p) > 1 and p[1] in ('ASSIGN', 'REVOKE', 'START', 'ERR', 'REBALANCE_ERROR'):
            print(f"{f:6} {(int(p[0]) - ev['KILL']) / 1000:+8.2f}s {' '.join(p[1:])[:150]}")
def longest_wait(t0, t1):
    return max([got - sent for got, sent in received if t0 <= sent < t1] or [0]) / 1000
print("longest wait of a record sent after the kill: %.2fs; after the restart: %.2fs" %
      (longest_wait(ev['KILL'], ev['RESTART']), longest_wait(ev['RESTART'], ev['END'] - 3000)))
print("(a record never received is not counted: compare the assignments above)")
PY
