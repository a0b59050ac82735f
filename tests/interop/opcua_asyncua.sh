#!/usr/bin/env bash
# Interop against a third-party OPC UA server: FreeOpcUa's asyncua (Python), whose secure
# endpoint is Basic256Sha256 SignAndEncrypt and which refuses anonymous users.
#   1. browsing before the server's certificate is trusted fails, naming pki/rejected;
#   2. `opcua trust` without --yes changes nothing, with --yes trusts it;
#   3. `opcua browse --toml` prints a tag map with nsu= node ids of all four types;
#   4. `run` records numbers, booleans, strings and arrays, with the Uncertain status the
#      server sends, and sends them upstream (Mosquitto);
#   5. the server is killed (SIGKILL) and restarted: the agent writes a gap record for all four
#      tags and values flow again after it.
# Usage: tests/interop/opcua_asyncua.sh path/to/pdtf-agent path/to/python-with-asyncua
set -euo pipefail
AGENT=$(realpath "${1:?usage: opcua_asyncua.sh path/to/pdtf-agent path/to/python}")
PY=${2:?usage: opcua_asyncua.sh path/to/pdtf-agent path/to/python}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${PDTF_INTEROP_WORK:-$(mktemp -d)}
# Below the ephemeral range (32768-60999): 48410 once met a client socket holding it.
UA_PORT=${PDTF_INTEROP_OPCUA_PORT:-14840}
MQTT_PORT=${PDTF_INTEROP_MQTT_PORT:-18850}
PREFIX=pdtf/ci/opcua/line1
export PDTF_CI_OPCUA_PW="ci-$RANDOM-$RANDOM"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
fail() {
  echo "INTEROP FAIL: $*" >&2
  echo "--- agent log" >&2; tail -n 40 "$WORK/agent.log" >&2 || true
  echo "--- server log" >&2; tail -n 20 "$WORK/server.log" >&2 || true
  exit 1
}

# The server's application instance certificate (its URI must match the application URI).
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=asyncua CI server" \
  -keyout "$WORK/server-key.pem" -out "$WORK/server-cert.pem" \
  -addext "subjectAltName=URI:urn:pdtf:ci:asyncua-server,DNS:localhost,IP:127.0.0.1" \
  -addext "keyUsage=critical,digitalSignature,nonRepudiation,keyEncipherment,dataEncipherment" \
  -addext "extendedKeyUsage=serverAuth,clientAuth" 2>/dev/null
openssl x509 -in "$WORK/server-cert.pem" -outform der -out "$WORK/server-cert.der"

start_server() {
  "$PY" "$HERE/asyncua_server.py" "$UA_PORT" "$WORK/server-cert.der" "$WORK/server-key.pem" \
    >>"$WORK/server.log" 2>&1 &
  SERVER=$!; pids+=("$SERVER")
  for _ in $(seq 300); do
    [ "$(grep -c 'asyncua server ready' "$WORK/server.log")" -ge "$1" ] && return 0
    sleep 0.1
  done
  fail "the asyncua server did not start"
}
start_server 1

mosquitto -p "$MQTT_PORT" >"$WORK/mosquitto.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do mosquitto_pub -p "$MQTT_PORT" -t ping -m x 2>/dev/null && break; sleep 0.1; done

cat > "$WORK/agent.toml" <<CONF
[agent]
id = "ci-opcua"
site = "ci"
area = "opcua"
line = "line1"
state_dir = "$WORK/state"

[brokers.mosquitto]
host = "127.0.0.1"
port = $MQTT_PORT

[opcua_servers.asyncua]
endpoint = "opc.tcp://127.0.0.1:$UA_PORT/"
security_policy = "Basic256Sha256"
security_mode = "SignAndEncrypt"
identity = { kind = "user_password", user = "pdtf", password = "\${PDTF_CI_OPCUA_PW}" }
retry_initial_ms = 200
retry_max_ms = 1000
keep_alive_ms = 1000

[[sources]]
id = "plc"
kind = "opcua"
server = "asyncua"
publishing_interval_ms = 200

[sinks.upstream]
broker = "mosquitto"
max_batch_records = 100

[[tags]]
name = "temp"
source = "plc"
node = "nsu=urn:pdtf:ci:asyncua;s=Line1.Temp"

[[tags]]
name = "running"
source = "plc"
node = "nsu=urn:pdtf:ci:asyncua;s=Line1.Running"
value_type = "bool"

[[tags]]
name = "batch"
source = "plc"
node = "nsu=urn:pdtf:ci:asyncua;s=Line1.Batch"
value_type = "string"

[[tags]]
name = "spectrum"
source = "plc"
node = "nsu=urn:pdtf:ci:asyncua;s=Line1.Spectrum"
value_type = "number_array"
CONF
"$AGENT" validate -c "$WORK/agent.toml"
browse() { "$AGENT" opcua browse -c "$WORK/agent.toml" --server asyncua --node "ns=2;s=Line1" --toml plc; }

# 1. Unknown server certificate: refused, and the error says where it went.
if browse >"$WORK/browse1.out" 2>&1; then fail "browse worked before the server was trusted"; fi
grep -q "^error: .*pki/rejected/" "$WORK/browse1.out" || fail "untrusted error does not name pki/rejected: $(cat "$WORK/browse1.out")"
echo "untrusted: $(cat "$WORK/browse1.out")"

# 2. trust: nothing without --yes, trusted with it.
if "$AGENT" opcua trust -c "$WORK/agent.toml" --server asyncua >"$WORK/trust1.out" 2>&1; then
  fail "opcua trust without --yes exited 0"
fi
[ -z "$(ls -A "$WORK/state/pki/trusted" 2>/dev/null)" ] || fail "trust without --yes wrote a file"
"$AGENT" opcua trust -c "$WORK/agent.toml" --server asyncua --yes
[ -n "$(ls -A "$WORK/state/pki/trusted")" ] || fail "trust --yes did not write the certificate"

# 3. browse prints a tag map for every variable.
browse >"$WORK/browse2.out" 2>"$WORK/browse2.err" || fail "browse failed once trusted: $(cat "$WORK/browse2.err")"
for want in 'nsu=urn:pdtf:ci:asyncua;s=Line1.Temp' 'value_type = "bool"' 'value_type = "string"' 'value_type = "number_array"'; do
  grep -qF "$want" "$WORK/browse2.out" || fail "browse --toml lacks $want: $(cat "$WORK/browse2.out")"
done
echo "browse: $(grep -c '^\[\[tags\]\]' "$WORK/browse2.out") tags mapped"

# 4 and 5. run, kill the server, restart it, stop.
mosquitto_sub -p "$MQTT_PORT" -q 1 -t "$PREFIX/records" >"$WORK/records.jsonl" 2>>"$WORK/sub.log" &
pids+=("$!")
sleep 0.5
RUST_LOG=info "$AGENT" run -c "$WORK/agent.toml" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!; pids+=("$AGENT_PID")
for _ in $(seq 200); do grep -q "OPC UA source subscribed" "$WORK/agent.log" && break; sleep 0.1; done
grep -q "OPC UA source subscribed" "$WORK/agent.log" || fail "the agent never subscribed"
sleep 4
echo "killing the asyncua server (SIGKILL) and restarting it"
kill -KILL "$SERVER"; wait "$SERVER" 2>/dev/null || true
sleep 2
start_server 2
for _ in $(seq 300); do grep -q "subscription transferred or recreated" "$WORK/agent.log" && break; sleep 0.1; done
grep -q "subscription transferred or recreated" "$WORK/agent.log" || fail "the agent did not reconnect"
sleep 4
kill -TERM "$AGENT_PID"; wait "$AGENT_PID" || fail "agent exited non-zero on SIGTERM"
sleep 1

PYTHONPATH="$HERE" python3 - "$WORK/records.jsonl" <<'PY' || fail "upstream record check failed"
import sys
import upstream_records
TEMP, RUNNING, BATCH, SPECTRUM = range(4)
samples, gaps = upstream_records.load(sys.argv[1])
by_tag = {t: [s for _, s in samples if s["tag"] == t] for t in range(4)}
print("upstream:", {k: len(v) for k, v in by_tag.items()}, "samples;", len(gaps), "gap(s)")
temps = by_tag[TEMP]
assert all(isinstance(s["value"], float) for s in temps if s["quality"] != "bad"), temps[:3]
assert any(s["quality"] == "uncertain" for s in temps), "no Uncertain temp sample"
assert any(s["quality"] == "good" for s in temps), "no Good temp sample"
assert any(s["value"] in (True, False) for s in by_tag[RUNNING]), by_tag[RUNNING][:3]
assert any(str(s["value"]).startswith("CI-") for s in by_tag[BATCH]), by_tag[BATCH][:3]
assert any(isinstance(s["value"], list) and len(s["value"]) == 16 for s in by_tag[SPECTRUM])
assert gaps, "the server kill must appear as a gap record"
gap_seq, gap = gaps[0]
assert sorted(gap["tags"]) == [0, 1, 2, 3], gap
after = [s for q, s in samples if q > gap_seq and s["tag"] == TEMP and s["quality"] == "good"]
assert after, "no Good temp value after the gap"
PY
echo "OPC UA interop (asyncua): OK"
