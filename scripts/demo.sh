#!/usr/bin/env bash
# make demo: the daemon on a built-in sample workload, with metrics on 127.0.0.1:9464.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
SECONDS_TO_RUN=${DEMO_SECONDS:-30}
LISTEN=${DEMO_LISTEN:-127.0.0.1:9464}
rm -rf demo && mkdir -p demo/logs demo/state
cat > demo/telemetryd.toml <<TOML
[sources]
paths = ["$PWD/demo/logs/*.jsonl"]
rescan_seconds = 1.0

[patterns]
key_fields = ["event_type", "service", "level"]
template_field = "message"

[checkpoint]
state_dir = "$PWD/demo/state"

[metrics]
listen = "$LISTEN"

[log]
format = "json"
TOML
echo "== writing sample telemetry to demo/logs/ (50,000 events, then 200 events/s while the demo runs)"
$BIN/python scripts/sample_events.py demo/logs/app.jsonl 50000
$BIN/python scripts/sample_events.py demo/logs/app.jsonl 1000000 --rate 200 --seed 2 &
WRITER=$!
$BIN/telemetryd run --config demo/telemetryd.toml 2> demo/telemetryd.log &
DAEMON=$!
cleanup() { kill "$WRITER" 2>/dev/null || true; kill -TERM "$DAEMON" 2>/dev/null || true; wait "$DAEMON" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for _ in $(seq 50); do
    curl -fs "http://$LISTEN/readyz" >/dev/null 2>&1 && break
    kill -0 "$DAEMON" 2>/dev/null || { echo "daemon exited:"; cat demo/telemetryd.log; exit 1; }
    sleep 0.2
done
sleep 3
echo
echo "== telemetryd status --config demo/telemetryd.toml"
$BIN/telemetryd status --config demo/telemetryd.toml
echo
echo "== telemetryd patterns --top 8 --config demo/telemetryd.toml"
$BIN/telemetryd patterns --top 8 --config demo/telemetryd.toml
echo
echo "== a few metrics from http://$LISTEN/metrics"
curl -fs "http://$LISTEN/metrics" | grep -E '^telemetryd_(events_total|patterns |files_tracked|checkpoint_lag_events|checkpoint_writes_total|read_lag_bytes)' || true
echo
echo "The daemon is running: metrics at http://$LISTEN/metrics, health at /healthz and /readyz,"
echo "log in demo/telemetryd.log. It stops in ${SECONDS_TO_RUN}s (Ctrl-C to stop now; DEMO_SECONDS=N to change)."
sleep "$SECONDS_TO_RUN"
