#!/usr/bin/env bash
# TLS interop against Mosquitto with client-certificate authentication
# (require_certificate true). Certificates are generated here with openssl; none are kept.
#   1. the agent sends its records over mutual TLS; a plain-listener subscriber sees them;
#   2. an agent that trusts the wrong CA fails closed: /readyz is 503 and names TLS, and
#      not one record reaches the broker.
# Usage: tests/interop/mosquitto_tls.sh path/to/pdtf-agent
set -euo pipefail
AGENT=$(realpath "${1:?usage: mosquitto_tls.sh path/to/pdtf-agent}")
WORK=$(mktemp -d)
chmod 755 "$WORK"  # mosquitto drops root to its own user and must read the certs
PLAIN=${PDTF_INTEROP_PLAIN_PORT:-18840}
TLS=${PDTF_INTEROP_TLS_PORT:-18841}
HEALTH=${PDTF_INTEROP_HEALTH_PORT:-18842}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
fail() { echo "TLS INTEROP FAIL: $*" >&2; tail -n 30 "$WORK"/*.log >&2 || true; exit 1; }

cd "$WORK"
gen_ca() { openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$1" -keyout "$1.key" -out "$1.pem" 2>/dev/null; }
gen_leaf() { # name ca san eku
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$3" "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 2 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
gen_ca site-ca
gen_ca rogue-ca
gen_leaf broker site-ca "IP:127.0.0.1,DNS:localhost" serverAuth
gen_leaf gw01 site-ca "DNS:gw01" clientAuth
chmod 644 ./*.key

cat > mosquitto.conf <<CONF
per_listener_settings true
listener $PLAIN 127.0.0.1
allow_anonymous true
listener $TLS 127.0.0.1
allow_anonymous true
cafile $WORK/site-ca.pem
certfile $WORK/broker.pem
keyfile $WORK/broker.key
require_certificate true
use_identity_as_username true
CONF
mosquitto -c mosquitto.conf >mosquitto.log 2>&1 &
pids+=($!)
for _ in $(seq 100); do mosquitto_pub -p "$PLAIN" -t ping -m x 2>/dev/null && break; sleep 0.1; done

agent_config() { # file ca state health_port
cat > "$1" <<CONF
[agent]
id = "ci-tls"
site = "ci"
area = "tls"
line = "line1"
state_dir = "$3"

[health]
listen = "127.0.0.1:$4"

[brokers.plain]
host = "127.0.0.1"
port = $PLAIN

[brokers.secure]
host = "127.0.0.1"
port = $TLS
backoff_initial_ms = 100
backoff_max_ms = 500
[brokers.secure.tls]
ca_file = "$2"
client_cert_file = "$WORK/gw01.pem"
client_key_file = "$WORK/gw01.key"

[[sources]]
id = "plc"
kind = "mqtt"
broker = "plain"

[sinks.alerts]
broker = "secure"

[sinks.upstream]
broker = "secure"

[[tags]]
name = "temp"
source = "plc"
topic = "ci/tls/temp"
limits = { hi = 80.0 }
CONF
}

# 1. mutual TLS works.
agent_config good.toml "$WORK/site-ca.pem" "$WORK/state-good" "$HEALTH"
"$AGENT" validate -c good.toml
mosquitto_sub -p "$PLAIN" -q 1 -t "pdtf/ci/tls/line1/records" >records.jsonl 2>sub.log &
pids+=($!)
sleep 0.3
RUST_LOG=info "$AGENT" run -c good.toml >good.log 2>&1 &
GOOD=$!; pids+=("$GOOD")
for _ in $(seq 100); do grep -q "Source subscribed" good.log && break; sleep 0.1; done
for i in $(seq 20); do mosquitto_pub -p "$PLAIN" -q 1 -t ci/tls/temp -m "$((70 + i))"; done
for _ in $(seq 100); do [ "$(grep -o '"sample"' records.jsonl | wc -l)" -ge 20 ] && break; sleep 0.1; done
n=$(grep -o '"sample"' records.jsonl | wc -l)
[ "$n" -ge 20 ] || fail "only $n samples arrived over mutual TLS"
ALARM=$(mosquitto_sub -p "$PLAIN" -C 1 -W 5 -t pdtf/ci/tls/line1/alarms/temp) || fail "no retained alarm over TLS"
echo "$ALARM" | grep -q '"state":"active"' || fail "alarm not active: $ALARM"
curl -fsS "http://127.0.0.1:$HEALTH/readyz" >/dev/null || fail "mutual-TLS agent not ready"
kill -TERM "$GOOD"; wait "$GOOD" || fail "agent exit code on SIGTERM"
echo "mutual TLS: $n samples and the retained alarm delivered"

# 2. trusting the wrong CA fails closed.
agent_config rogue.toml "$WORK/rogue-ca.pem" "$WORK/state-rogue" "$HEALTH"
: >records.jsonl
RUST_LOG=info "$AGENT" run -c rogue.toml >rogue.log 2>&1 &
ROGUE=$!; pids+=("$ROGUE")
for _ in $(seq 100); do grep -q "Source subscribed" rogue.log && break; sleep 0.1; done
for i in $(seq 5); do mosquitto_pub -p "$PLAIN" -q 1 -t ci/tls/temp -m "$i"; done
sleep 2
code=$(curl -s -o readyz.txt -w '%{http_code}' "http://127.0.0.1:$HEALTH/readyz")
[ "$code" = 503 ] || fail "readyz was $code with an untrusted broker certificate"
grep -q TLS readyz.txt || fail "readyz does not name the TLS problem: $(cat readyz.txt)"
grep -q "TLS handshake failed" rogue.log || fail "no clear log line for the TLS refusal"
[ ! -s records.jsonl ] || fail "records reached the broker from an agent that should have refused it"
kill -TERM "$ROGUE"; wait "$ROGUE" || true
echo "untrusted CA: refused, readyz 503: $(tr '\n' ' ' < readyz.txt)"
echo "mosquitto TLS interop: OK"
