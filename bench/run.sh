#!/usr/bin/env bash
# Sets up like the tests (tests/setup_env.sh), then runs one benchmark:
#   bash bench/run.sh monitor_tick
# Each benchmark prints its headline figure last, as `name: value`.
set -euo pipefail
name="${1:?usage: bash bench/run.sh <benchmark name, e.g. monitor_tick>}"
shift
source "$(dirname "${BASH_SOURCE[0]}")/../tests/setup_env.sh"
cd "$TC_ROOT"
exec "$TC_PYTHON" "bench/${name}.py" "$@"
