#!/usr/bin/env bash
# Run `demo --duration SECS` and check its summary: samples ingested, alarms raised, records
# acked upstream, batches started (the first by an MQTT command, with its material charge),
# and samples committed from each of MQTT, OPC UA and Modbus. Used by .ci/run
# for the native build and, with a runner, for the aarch64 build under qemu-user-static.
# Usage: tests/demo_summary.sh SECS path/to/pdtf-agent [runner args...]
set -euo pipefail
secs=${1:?usage: demo_summary.sh SECS path/to/pdtf-agent [runner...]}
bin=${2:?usage: demo_summary.sh SECS path/to/pdtf-agent [runner...]}
shift 2
out=$("$@" "$bin" demo --duration "$secs" 2>/dev/null)
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
