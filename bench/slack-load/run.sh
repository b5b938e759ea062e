#!/usr/bin/env bash
# Slack ack-path load benchmark: signed /status slash commands against
# `opsbot serve` (release build) on loopback at 1, 16 and 64 connections,
# 10 s each, with wrk. Every ack is sent only after the command's audit records
# are flushed to disk; at the end the script checks that the trail holds one `request`
# record per acknowledged command and verifies the chain.
# Needs: wrk (apt-get install wrk), python3. Usage: bench/slack-load/run.sh [seconds]
# DURABILITY=flush runs it with bot.durability = "flush" instead of the
# default fdatasync, for comparison.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
port=${PORT:-38080}
source "$here/phases.sh"

cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin="${CARGO_TARGET_DIR:-$root/target}/release/opsbot"
config="$here/opsbot.toml"
if [ -n "${DURABILITY:-}" ]; then
  config="$work/opsbot.toml"
  sed -e "s|^commands_dir = .*|commands_dir = \"$root/commands\"|" \
      -e "s|^\[bot\]|[bot]\ndurability = \"$DURABILITY\"|" "$here/opsbot.toml" > "$config"
fi

SLACK_SIGNING_SECRET=$secret SLACK_BOT_TOKEN=xoxb-bench SLACK_API_URL=http://127.0.0.1:9/api OPSBOT_LOG=warn \
  "$bin" serve --config "$config" --data-dir "$work/data" --listen "127.0.0.1:$port" > "$work/serve.log" 2>&1 &
pid=$!
await_ready "$work/serve.log" curl -sf -o /dev/null "http://127.0.0.1:$port/health/ready"
run_phases

kill -TERM $pid; wait $pid || true
records=$("$bin" audit export --config "$config" --data-dir "$work/data" | grep -c '"kind":"request"' || true)
echo "acknowledged commands: $total_ok; request records in the audit trail: $records"
"$bin" audit verify --config "$config" --data-dir "$work/data"
# wrk may cut a request off at the end of a run after opsbot committed it, so
# the trail can hold a few more than wrk counted, never fewer.
[ "$records" -ge "$total_ok" ] || { echo "MISSING: acknowledged commands not in the trail" >&2; exit 1; }
