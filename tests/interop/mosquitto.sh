#!/usr/bin/env bash
# Interop against a real third-party broker (Eclipse Mosquitto, Debian package):
#   1. the agent subscribes to tags published with mosquitto_pub;
#   2. a late subscriber sees the retained alarm state the agent published;
#   3. Mosquitto is restarted mid-run (SIGTERM, persistence on) while samples flow;
#   4. a persistent-session historian (mosquitto_sub -c) has every record seq 1..N once
#      de-duplicated, and N covers every sample published.
# Usage: tests/interop/mosquitto.sh path/to/pdtf-agent
set -euo pipefail
AGENT=${1:?usage: mosquitto.sh path/to/pdtf-agent}
AGENT=$(realpath "$AGENT")
WORK=$(mktemp -d)
# mosquitto started as root drops to its own user: it needs to write its persistence file.
mkdir -p "$WORK/persist" && chmod 755 "$WORK" && chmod 777 "$WORK/persist"
PORT=${PDTF_INTEROP_PORT:-18830}
PREFIX=pdtf/ci/interop/line1
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
fail() { echo "INTEROP FAIL: $*" >&2; echo "--- agent log"; tail -n 40 "$WORK/agent.log" >&2 || true; exit 1; }

cat > "$WORK/mosquitto.conf" <<CONF
listener $PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $WORK/persist/
autosave_interval 1
max_queued_messages 100000
CONF
start_broker() {
  mosquitto -c "$WORK/mosquitto.conf" >>"$WORK/mosquitto.log" 2>&1 &
  BROKER=$!; pids+=("$BROKER")
  for _ in $(seq 100); do mosquitto_pub -p "$PORT" -t ping -m x 2>/dev/null && return 0; sleep 0.1; done
  fail "mosquitto did not start"
}
start_broker

cat > "$WORK/agent.toml" <<CONF
[agent]
id = "ci-agent"
site = "ci"
area = "interop"
line = "line1"
state_dir = "$WORK/state"

[brokers.mosquitto]
host = "127.0.0.1"
port = $PORT
backoff_initial_ms = 100
backoff_max_ms = 1000

[[sources]]
id = "plc"
kind = "mqtt"
broker = "mosquitto"
topics = ["ci/plc/#"]

[sinks.alerts]
broker = "mosquitto"

[sinks.upstream]
broker = "mosquitto"
max_batch_records = 100

[[tags]]
name = "temp"
unit = "degC"
source = "plc"
topic = "ci/plc/temp"
value_pointer = "/v"
limits = { hi = 80.0, deadband = 1.0 }
CONF
"$AGENT" validate -c "$WORK/agent.toml"

# Historian: persistent session (-c, fixed id, QoS 1) so messages queued while it is
# reconnecting after the broker restart are delivered, not lost.
mosquitto_sub -p "$PORT" -i ci-historian -c -q 1 -t "$PREFIX/records" >"$WORK/records.jsonl" 2>>"$WORK/sub.log" &
HIST=$!; pids+=("$HIST")
sleep 0.5

RUST_LOG=info "$AGENT" run -c "$WORK/agent.toml" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!; pids+=("$AGENT_PID")
for _ in $(seq 100); do grep -q "Source subscribed" "$WORK/agent.log" && break; sleep 0.1; done
grep -q "Source subscribed" "$WORK/agent.log" || fail "agent never subscribed"

publish() { for i in $(seq "$1" "$2"); do mosquitto_pub -p "$PORT" -q 1 -t ci/plc/temp -m "{\"v\":$3}" || true; done; }
publish 1 50 20.5
publish 51 55 85
sleep 1
ALARM=$(mosquitto_sub -p "$PORT" -C 1 -W 10 -t "$PREFIX/alarms/temp") || fail "no retained alarm on $PREFIX/alarms/temp"
echo "retained alarm: $ALARM"
echo "$ALARM" | grep -q '"state":"active"' || fail "alarm not active: $ALARM"

echo "restarting mosquitto mid-run"
kill -TERM "$BROKER"; wait "$BROKER" 2>/dev/null || true
sleep 1
start_broker
# The historian's mosquitto_sub exits when its broker goes away: restart it on its session.
kill "$HIST" 2>/dev/null || true
mosquitto_sub -p "$PORT" -i ci-historian -c -q 1 -t "$PREFIX/records" >>"$WORK/records.jsonl" 2>>"$WORK/sub.log" &
HIST=$!; pids+=("$HIST")
subscribed() { grep -c "Source subscribed" "$WORK/agent.log" || true; }
for _ in $(seq 200); do [ "$(subscribed)" -ge 2 ] && break; sleep 0.1; done
[ "$(subscribed)" -ge 2 ] || fail "agent did not resubscribe after the broker restart"
publish 56 150 21.0
publish 151 155 70
sleep 2
kill -TERM "$AGENT_PID"; wait "$AGENT_PID" || fail "agent exited non-zero on SIGTERM"
sleep 1

python3 - "$WORK/records.jsonl" "$AGENT" "$WORK" <<'PY' || fail "upstream record check failed"
import json, sys
seqs, samples, gaps = set(), 0, 0
for line in open(sys.argv[1]):
    line = line.strip()
    if not line:
        continue
    m = json.loads(line)
    assert m["agent_id"] == "ci-agent"
    for r in m["records"]:
        if r["seq"] not in seqs:
            samples += "sample" in r["body"]
            gaps += "gap" in r["body"]
        seqs.add(r["seq"])
top = max(seqs)
missing = sorted(set(range(1, top + 1)) - seqs)
print(f"historian: {len(seqs)} distinct records, seq 1..{top}, {samples} samples, {gaps} gap records")
assert not missing, f"missing seqs: {missing[:20]}"
assert samples == 155, f"{samples} samples reached upstream, 155 were published"
assert gaps >= 1, "the broker restart must appear as a gap record"
PY
echo "mosquitto interop: OK"
