#!/usr/bin/env bash
# Same-day reference for bench/slack-load: the same signed /status slash
# commands, the same wrk harness and connection counts, against Slack's Bolt
# for JavaScript 5.1 (app.js), which checks the signature and acks but writes
# nothing durable. The issue's targets are stated against Bolt's figures on
# "this machine"; this VM's speed varies from day to day, so run this beside
# bench/slack-load/run.sh to compare like with like.
# Needs: node + npm, wrk, python3. Usage: bench/bolt-reference/run.sh [seconds]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
load=$(cd "$here/../slack-load" && pwd)
secs=${1:-10}
port=${PORT:-38081}
secret=bench-signing-secret
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT

(cd "$here" && npm ci --no-audit --no-fund --silent)
SLACK_SIGNING_SECRET=$secret PORT=$port node "$here/app.js" > "$work/bolt.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "bolt ready" "$work/bolt.log" && break; sleep 0.1; done

printf '%-12s %12s %10s %10s %10s %12s\n' connections "req/s" "p50" "p99" "non-2xx" "peak RSS"
for conns in 1 16 64; do
  count=$([ "$conns" = 1 ] && echo $((10000 * secs)) || echo $((60000 * secs)))
  python3 "$load/gen.py" "$secret" "$count" "$work/bodies.tsv" 1
  BODIES="$work/bodies.tsv" wrk -t1 -c"$conns" -d"${secs}s" --latency \
    -s "$load/signed.lua" "http://127.0.0.1:$port" > "$work/wrk-$conns.txt"
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk-$conns.txt")
  p50=$(awk '$1=="50%" {print $2}' "$work/wrk-$conns.txt")
  p99=$(awk '$1=="99%" {print $2}' "$work/wrk-$conns.txt")
  bad=$(awk '/Non-2xx/ {print $NF}' "$work/wrk-$conns.txt"); bad=${bad:-0}
  hwm=$(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$pid/status)
  printf '%-12s %12s %10s %10s %10s %12s\n' "$conns" "$rps" "$p50" "$p99" "$bad" "$hwm"
done
