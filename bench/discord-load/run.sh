#!/usr/bin/env bash
# Discord ack-path load benchmark: Ed25519-signed /status interactions
# against `opsbot serve` (release build) on loopback at 1, 16 and 64
# connections, 10 s each, with wrk, measured exactly as the Slack benchmark
# (bench/slack-load/phases.sh). Every answer is sent only after the
# interaction's audit records are durable (fdatasync, the default); at the
# end the script checks that the trail holds one `request` record per
# answered interaction and verifies the chain.
# Needs: wrk, python3 with PyNaCl. Usage: bench/discord-load/run.sh [seconds]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
port=${PORT:-38081}
export GEN="$here/gen.py"
source "$root/bench/slack-load/phases.sh"

cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin="${CARGO_TARGET_DIR:-$root/target}/release/opsbot"
config="$here/opsbot.toml"
public=$(python3 "$GEN" "$secret" 0 /dev/null)

DISCORD_TOKEN=bench DISCORD_APPLICATION_ID=4242424242424242 DISCORD_PUBLIC_KEY=$public \
  DISCORD_API_URL=http://127.0.0.1:9 OPSBOT_LOG=warn \
  "$bin" serve --config "$config" --data-dir "$work/data" --listen "127.0.0.1:$port" > "$work/serve.log" 2>&1 &
pid=$!
await_ready "$work/serve.log" curl -sf -o /dev/null "http://127.0.0.1:$port/health/ready"
run_phases

kill -TERM $pid; wait $pid || true
records=$("$bin" audit export --config "$config" --data-dir "$work/data" | grep -c '"kind":"request"' || true)
echo "answered interactions: $total_ok; request records in the audit trail: $records"
"$bin" audit verify --config "$config" --data-dir "$work/data"
[ "$records" -ge "$total_ok" ] || { echo "MISSING: answered interactions not in the trail" >&2; exit 1; }
