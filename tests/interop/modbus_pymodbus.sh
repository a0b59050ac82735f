#!/usr/bin/env bash
# Interop against a third-party Modbus device: pymodbus (Python), over TCP and over RTU on a
# virtual serial pair (socat). Per transport:
#   1. `run` polls every data type the server holds and sends the samples upstream
#      (Mosquitto); the values decode to what the server holds;
#   2. the server is killed (SIGKILL) and restarted: the agent records a gap for the device's
#      tags and values flow again after it, without a restart;
#   3. RTU: two units share the line; unit 9 does not exist, and its timeouts cost only
#      itself (units 1 and 2 keep polling, unit 9 has an outage and no samples).
# Usage: tests/interop/modbus_pymodbus.sh path/to/pdtf-agent path/to/python-with-pymodbus
set -euo pipefail
AGENT=$(realpath "${1:?usage: modbus_pymodbus.sh path/to/pdtf-agent path/to/python}")
PY=${2:?usage: modbus_pymodbus.sh path/to/pdtf-agent path/to/python}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${PDTF_INTEROP_WORK:-$(mktemp -d)}
MB_PORT=${PDTF_INTEROP_MODBUS_PORT:-15020}
MQTT_PORT=${PDTF_INTEROP_MQTT_PORT:-18851}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
fail() {
  echo "INTEROP FAIL: $*" >&2
  echo "--- agent log" >&2; tail -n 40 "$WORK"/*/agent.log >&2 || true
  echo "--- server log" >&2; tail -n 20 "$WORK"/*/server.log >&2 || true
  exit 1
}

mosquitto -p "$MQTT_PORT" >"$WORK/mosquitto.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do mosquitto_pub -p "$MQTT_PORT" -t ping -m x 2>/dev/null && break; sleep 0.1; done

tags() { # source id, then one line per tag: name|modbus table
  local src=$1; shift
  for t in "$@"; do
    printf '[[tags]]\nname = "%s"\nsource = "%s"\nmodbus = { %s, poll_interval_ms = 200 }\n\n' "${t%%|*}" "$src" "${t#*|}"
  done
}
UNIT1_TAGS=(
  "u16|table = \"holding\", address = 0, type = \"u16\""
  "f32|table = \"holding\", address = 1, type = \"f32\""
  "i32_cdab|table = \"holding\", address = 3, type = \"i32\", word_order = \"little\""
  "bit2|table = \"holding\", address = 5, type = \"bit\", bit = 2"
  "i16_scaled|table = \"input\", address = 0, type = \"i16\", scale = 0.1"
  "coil|table = \"coil\", address = 0, type = \"bool\""
  "di|table = \"discrete_input\", address = 0, type = \"bool\""
)

# $1 transport, $2 the device sections; writes $WORK/$1/agent.toml
config() {
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1/agent.toml" <<CONF
[agent]
id = "ci-modbus-$1"
site = "ci"
area = "modbus"
line = "$1"
state_dir = "$WORK/$1/state"

[brokers.mosquitto]
host = "127.0.0.1"
port = $MQTT_PORT

[sinks.upstream]
broker = "mosquitto"
max_batch_records = 100

$2
CONF
}

start_server() { # transport, where, nth start
  "$PY" "$HERE/pymodbus_server.py" "$1" "$2" >>"$WORK/$1/server.log" 2>&1 &
  SERVER=$!; pids+=("$SERVER")
  for _ in $(seq 300); do
    [ "$(grep -c 'pymodbus server ready' "$WORK/$1/server.log")" -ge "$3" ] && break
    sleep 0.1
  done
  sleep 1
}

run_case() { # transport, where
  local t=$1 where=$2
  mosquitto_sub -p "$MQTT_PORT" -q 1 -t "pdtf/ci/modbus/$t/records" >"$WORK/$t/records.jsonl" 2>>"$WORK/$t/sub.log" &
  pids+=("$!")
  sleep 0.5
  "$AGENT" validate -c "$WORK/$t/agent.toml"
  start_server "$t" "$where" 1
  RUST_LOG=info "$AGENT" run -c "$WORK/$t/agent.toml" >"$WORK/$t/agent.log" 2>&1 &
  AGENT_PID=$!; pids+=("$AGENT_PID")
  sleep 4
  echo "$t: killing the pymodbus server (SIGKILL) and restarting it"
  kill -KILL "$SERVER"; wait "$SERVER" 2>/dev/null || true
  sleep 2
  start_server "$t" "$where" 2
  sleep 4
  kill -TERM "$AGENT_PID"; wait "$AGENT_PID" || fail "$t: agent exited non-zero on SIGTERM"
  sleep 1
  PYTHONPATH="$HERE" python3 - "$WORK/$t/records.jsonl" "$t" <<'PY' || fail "$t: upstream record check failed"
import sys
import upstream_records
want = {0: 54321.0, 1: 21.5, 2: -70000.0, 3: True, 4: -65.5, 5: True, 6: True}
samples, gaps = upstream_records.load(sys.argv[1])
good = {t: [s["value"] for _, s in samples if s["tag"] == t and s["quality"] == "good"] for t in range(9)}
print(sys.argv[2], "upstream:", {k: len(v) for k, v in good.items()}, "good samples;", [g["source"] for _, g in gaps], "gap(s)")
for tag, value in want.items():
    assert good[tag], f"no good sample of tag {tag}"
    assert all(abs(v - value) < 1e-9 if isinstance(value, float) else v == value for v in good[tag]), (tag, good[tag][:3])
unit1 = [g for _, g in gaps if g["source"] == "unit1"]
assert unit1, "the server kill must appear as a gap of unit1"
gap_seq = min(q for q, g in gaps if g["source"] == "unit1")
assert any(q > gap_seq and s["tag"] == 0 and s["quality"] == "good" for q, s in samples), "no good value after the gap"
if sys.argv[2] == "rtu":
    assert good[7] and all(v == 222.0 for v in good[7]), good[7][:3]
    assert not good[8], "unit 9 does not exist"
    # Unit 9's timeouts cost only itself: unit 2 kept polling every 200 ms (about 5/s).
    assert len(good[7]) >= 20, len(good[7])
PY
}

# TCP
config tcp "[modbus_devices.unit1]
transport = \"tcp\"
host = \"127.0.0.1\"
port = $MB_PORT
timeout_ms = 300
retry_initial_ms = 200
retry_max_ms = 1000

[[sources]]
id = \"unit1\"
kind = \"modbus\"
device = \"unit1\"

$(tags unit1 "${UNIT1_TAGS[@]}")"
run_case tcp "$MB_PORT"
echo "Modbus TCP interop (pymodbus): OK"

# RTU over a virtual serial pair: the agent on one end, pymodbus on the other.
mkdir -p "$WORK/rtu"
socat -d pty,raw,echo=0,link="$WORK/rtu/agent-tty" pty,raw,echo=0,link="$WORK/rtu/device-tty" 2>"$WORK/rtu/socat.log" &
pids+=("$!")
for _ in $(seq 50); do [ -e "$WORK/rtu/device-tty" ] && break; sleep 0.1; done
rtu_device() { # name, unit id
  printf '[modbus_devices.%s]\ntransport = "rtu"\nserial = "%s"\nbaud = 19200\nunit_id = %s\ntimeout_ms = 150\nretry_initial_ms = 200\nretry_max_ms = 1000\n\n[[sources]]\nid = "%s"\nkind = "modbus"\ndevice = "%s"\n\n' "$1" "$WORK/rtu/agent-tty" "$2" "$1" "$1"
}
config rtu "$(rtu_device unit1 1)
$(rtu_device unit2 2)
$(rtu_device unit9 9)
$(tags unit1 "${UNIT1_TAGS[@]}")
$(tags unit2 "u2|table = \"holding\", address = 0, type = \"u16\"")
$(tags unit9 "u9|table = \"holding\", address = 0, type = \"u16\"")"
run_case rtu "$WORK/rtu/device-tty"
echo "Modbus RTU interop (pymodbus over socat): OK"
