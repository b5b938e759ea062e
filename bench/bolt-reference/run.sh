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
port=${PORT:-38081}
source "$here/../slack-load/phases.sh"

(cd "$here" && npm ci --no-audit --no-fund --silent)
SLACK_SIGNING_SECRET=$secret PORT=$port node "$here/app.js" > "$work/bolt.log" 2>&1 &
pid=$!
await_ready "$work/bolt.log" grep -q "bolt ready" "$work/bolt.log"
run_phases
