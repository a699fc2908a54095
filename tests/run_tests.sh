#!/usr/bin/env bash
# Sets up everything (tests/setup_env.sh), then runs the whole test suite.
# Extra arguments go to pytest, e.g. `bash tests/run_tests.sh -k monitor`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
cd "$TC_ROOT"
set +e
"$TC_PYTHON" -m pytest -c tests/pytest.ini "$@"
status=$?
set -e
if [ "$status" = "5" ]; then
  echo "run_tests: pytest collected no tests, which counts as a failure" >&2
  exit 1
fi
exit "$status"
