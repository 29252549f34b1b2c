#!/usr/bin/env bash
# Set up .venv with the test dependencies (incl. tensorflow-cpu for the parity tests) and run the default test suite (slow tests excluded).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" dev,tf
cd "$root"
exec .venv/bin/python -m pytest "$@"
