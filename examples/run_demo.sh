#!/usr/bin/env bash
# The main job end to end on a fresh Linux machine with Python 3.11:
# sets everything up (tests/setup_env.sh), then runs examples/run_demo.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../tests/setup_env.sh"
cd "$TC_ROOT"
exec "$TC_PYTHON" examples/run_demo.py "$@"
