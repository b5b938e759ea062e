#!/usr/bin/env bash
# The test command (README, and what .ci/run calls). Installs what the tests
# use beyond the Rust toolchain, then runs the whole suite:
# - slack_sdk: Slack's own Python SDK signs one test's requests;
# - moto[server]: the AWS emulator the ECS tests start on a free loopback port
#   (boto3 comes with it and seeds it);
# - discord.py and PyNaCl: discord.py proves the fake Discord (REST and
#   gateway), PyNaCl signs one test's interactions as Discord does;
# - kubectl: proves the fake Kubernetes API server against the real client
#   (present on these machines; Debian's kubernetes-client elsewhere);
# - PostgreSQL (Debian's postgresql): the runbook `sql` tests start a
#   throwaway cluster of their own, as the postgres user, on a free loopback
#   port (nothing is left running; the package's own cluster is not used).
# - Prometheus Alertmanager (Debian's prometheus-alertmanager): the alert
#   tests start a pair of their own on free loopback ports, webhooks pointed
#   at the bot (the package's own service is not used).
# Every other peer (Slack Web API and Socket Mode, Discord REST and gateway, Kubernetes API server,
# scripted ECS API, smoke-test targets) is a fake inside the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check 'slack_sdk>=3,<4' 'moto[server]>=5,<6' \
  'discord.py>=2.4,<3' 'PyNaCl>=1.5,<2'
if ! command -v kubectl >/dev/null; then
  apt-get update -qq && apt-get install -y -qq kubernetes-client
fi
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
fi
if ! command -v prometheus-alertmanager >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager
fi
cargo fmt --check
cargo test --locked "$@"
