#!/usr/bin/env bash
# Run `demo --duration SECS` and check its summary: samples ingested, alarms raised, records
# acked upstream, batches started (the first by an MQTT command, with its material charge),
# and samples committed from each of MQTT, OPC UA and Modbus. While it runs, the first batch
# is read over the HTTP API; afterwards `batch show` on the demo's journal must give the same
# batch, phases and materials. Used by .ci/run for the native build and, with a runner, for
# the aarch64 build under qemu-user-static. Needs curl and python3.
# Usage: tests/demo_summary.sh SECS path/to/pdtf-agent [runner args...]
set -euo pipefail
secs=${1:?usage: demo_summary.sh SECS path/to/pdtf-agent [runner...]}
bin=${2:?usage: demo_summary.sh SECS path/to/pdtf-agent [runner...]}
shift 2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$@" "$bin" demo --duration "$secs" >"$work/out" 2>"$work/err" &
demo=$!
# The HTTP API's address, printed at start.
api=""
for _ in $(seq 1 200); do
  api=$(sed -n 's|^HTTP API: \(http://[0-9.:]*\)/lines.*|\1|p' "$work/err" | head -1)
  [ -n "$api" ] && break
  sleep 0.1
done
[ -n "$api" ] || { echo "demo summary: the demo printed no HTTP API address"; cat "$work/err"; exit 1; }
# Read the command-started batch over HTTP once its material charge is in.
for _ in $(seq 1 "$((secs * 2))"); do
  if curl -fsS "$api/batches/GR-2026-0141" >"$work/http.json" 2>/dev/null \
    && grep -q '"binder solution"' "$work/http.json"; then
    break
  fi
  sleep 0.5
done
wait "$demo"
out=$(cat "$work/out")
echo "$out"
for field in "samples ingested" "alarms raised" "records acked upstream" "batches started"; do
  n=$(echo "$out" | sed -n "s/^ *$field *\([0-9]*\).*/\1/p")
  [ "${n:-0}" -gt 0 ] || { echo "demo summary: '$field' is not > 0"; exit 1; }
done
for kind in mqtt opcua modbus; do
  echo "$out" | grep -Eq "^ *samples by source .*\($kind\) [1-9]" \
    || { echo "demo summary: no $kind samples committed"; exit 1; }
done
# The demo's MES starts the first batch by an MQTT command and charges its binder.
echo "$out" | grep -Eq "^ *GR-2026-0141 .*charged binder solution" \
  || { echo "demo summary: the command-started batch with its material charge is missing"; exit 1; }
# The stopped demo's journal gives the batch the HTTP API gave while it ran.
state=$(dirname "$(echo "$out" | sed -n 's/^ *journal *//p')")
"$@" "$bin" batch show GR-2026-0141 --state-dir "$state" --format json >"$work/cli.json"
python3 - "$work/http.json" "$work/cli.json" <<'PY'
import json, sys
http, cli = (json.load(open(p)) for p in sys.argv[1:3])
for key in ("batch_id", "line", "recipe", "started", "materials"):
    assert http[key] == cli[key], f"{key}: HTTP {http[key]!r} != batch show {cli[key]!r}"
# The demo ran on after the HTTP read: the phases then are the first phases now.
hp = [(p["name"], p["start"]) for p in http["phases"]]
cp = [(p["name"], p["start"]) for p in cli["phases"]]
assert cp[: len(hp)] == hp and hp, f"phases: HTTP {hp} vs batch show {cp}"
print(f"demo summary: HTTP and batch show agree on {cli['batch_id']} ({len(cp)} phases, {len(cli['materials'])} charge)")
PY
