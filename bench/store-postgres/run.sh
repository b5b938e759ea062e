#!/usr/bin/env bash
# Durable appends per second on the PostgreSQL store beside sled's
# (`cargo bench --bench core -- durable_append`), against a throwaway local
# PostgreSQL (Debian's package) with its durable defaults: fsync on,
# synchronous_commit on, so an append returns once its WAL is on disk.
# Run as root (the cluster runs as `postgres`) or as any other user.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d /var/tmp/opsbot-pg-bench.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$dir"
as_pg "$bin/initdb" -D "$dir/pg" -U opsbot --auth=trust >/dev/null
as_pg "$bin/pg_ctl" -D "$dir/pg" -o "-h 127.0.0.1 -p $port -k $dir" -l "$dir/log" -w start >/dev/null
trap 'as_pg "$bin/pg_ctl" -D "$dir/pg" -m fast stop >/dev/null; rm -rf "$dir"' EXIT
echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $dir (fsync on)"
OPSBOT_BENCH_PG_URL="host=127.0.0.1 port=$port user=opsbot dbname=postgres" OPSBOT_BENCH_DIR=/var/tmp \
  cargo bench --bench core -- durable_append "$@"
