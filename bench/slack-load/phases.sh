# Sourced by bench/slack-load/run.sh and bench/bolt-reference/run.sh at their
# start, so the two servers are measured the same way: the signing secret, a
# scratch dir ($work, removed on exit with the server, $pid, stopped), the
# phase length ($secs, from the caller's first argument), and the phases.
set -euo pipefail
phases_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
secs=${1:-10}
secret=bench-signing-secret
work=$(mktemp -d)
pid=
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

# await_ready LOG COMMAND...: waits until COMMAND succeeds, or fails showing LOG.
await_ready() {
  local log=$1; shift
  for _ in $(seq 100); do "$@" && return 0; sleep 0.1; done
  echo "the server did not become ready; its log:" >&2; cat "$log" >&2; exit 1
}

# Prints one row per phase; leaves the acknowledged (2xx) count in total_ok.
# Needs pid (the server's) and port.
run_phases() {
  total_ok=0
  printf '%-12s %12s %10s %10s %10s %12s\n' connections "req/s" "p50" "p99" "non-2xx" "peak RSS"
  # One wrk thread drives all connections (it needs well under one core here).
  # With several, wrk runs each thread's Lua init while the threads before it
  # already send load and counts their requests in a run time that starts only
  # after the last init: that overstated req/s and diluted the latency tail.
  local conns count out rps p50 p99 done_n bad hwm
  for conns in 1 16 64; do
    count=$([ "$conns" = 1 ] && echo $((10000 * secs)) || echo $((60000 * secs)))
    python3 "${GEN:-$phases_dir/gen.py}" "$secret" "$count" "$work/bodies.tsv" 1
    out="$work/wrk-$conns.txt"
    BODIES="$work/bodies.tsv" wrk -t1 -c"$conns" -d"${secs}s" --latency \
      -s "$phases_dir/signed.lua" "http://127.0.0.1:$port" > "$out"
    rps=$(awk '/Requests\/sec/ {print $2}' "$out")
    p50=$(awk '$1=="50%" {print $2}' "$out")
    p99=$(awk '$1=="99%" {print $2}' "$out")
    done_n=$(awk '/requests in/ {print $1}' "$out")
    bad=$(awk '/Non-2xx/ {print $NF}' "$out"); bad=${bad:-0}
    total_ok=$((total_ok + done_n - bad))
    hwm=$(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$pid/status)
    printf '%-12s %12s %10s %10s %10s %12s\n' "$conns" "$rps" "$p50" "$p99" "$bad" "$hwm"
  done
}
