#!/usr/bin/env bash
# Audit trail at scale: fills a store with N records (default 1,000,000) and
# measures, on the release build:
#   - `opsbot audit verify` wall time and peak memory (three runs);
#   - `opsbot audit export` to /dev/null: wall time and peak memory;
#   - a bot (`opsbot serve`, no chat platform) idle on that store: resident
#     memory once ready, and its peak after an export of the whole trail
#     through its admin socket.
# Usage: bench/audit-scale/run.sh [N]. Needs /usr/bin/time and curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${1:-1000000}"
cargo build --release --quiet --bin opsbot --example fill_trail
BIN=target/release/opsbot
WORK=$(mktemp -d)
trap 'kill "${BOT:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
DATA="$WORK/data"
export OPSBOT_DATA_DIR="$DATA" OPSBOT_LOG=warn
# The demo's services and rules, without Slack (serve needs no tokens then).
CONFIG="$WORK/bench.toml"
sed -e '/^\[slack\]/,/^$/d' -e "s|^commands_dir = .*|commands_dir = \"$PWD/commands\"|" config/demo.toml > "$CONFIG"
export OPSBOT_CONFIG="$CONFIG"

echo "== filling $N records"
target/release/examples/fill_trail "$DATA" "$N"
du -sh "$DATA"

measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" > "$WORK/out" 2>"$WORK/err" || { cat "$WORK/err"; exit 1; }
  read -r secs kib < "$WORK/time"
  printf '%-28s %6.2f s   peak %6.1f MiB\n' "$label" "$secs" "$(echo "$kib/1024" | bc -l)"
}

echo "== audit verify (direct, read-only)"
for i in 1 2 3; do
  measure "verify run $i" "$BIN" audit verify
done
head -1 "$WORK/out"
echo "== audit export (direct)"
measure "export" "$BIN" audit export
echo "   $(wc -l < "$WORK/out") records exported"

echo "== a bot idle on the store"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" serve --listen "127.0.0.1:$PORT" > "$WORK/serve.log" 2>&1 &
BOT=$!
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$PORT/health/ready" > /dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/health/ready" > /dev/null || { cat "$WORK/serve.log"; exit 1; }
sleep 5
rss() { awk "/^$1:/ {printf \"%.1f MiB\", \$2/1024}" "/proc/$BOT/status"; }
echo "   idle: resident $(rss VmRSS), peak so far $(rss VmHWM)"
measure "export via the running bot" "$BIN" audit export
echo "   after the export: bot resident $(rss VmRSS), bot peak $(rss VmHWM)"
measure "verify via the running bot" "$BIN" audit verify
echo "   after the verify: bot resident $(rss VmRSS), bot peak $(rss VmHWM)"
echo "== after that bot has stopped (its start wrote sled's snapshot; a direct"
echo "   open now replays only what was logged since)"
kill -TERM "$BOT"; wait "$BOT" || true; BOT=
for i in 1 2; do
  for _ in $(seq 1 50); do "$BIN" audit verify > /dev/null 2>&1 && break; sleep 0.1; done
  measure "verify run $i" "$BIN" audit verify
done
