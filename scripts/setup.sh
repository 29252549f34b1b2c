#!/usr/bin/env bash
# Create or update the project virtualenv (.venv) and install the package with the pinned torch.
# Usage: bash scripts/setup.sh [extra]   (extra: "dev" for the test dependencies)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extra="${1:-}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
spec="."
[ -n "$extra" ] && spec=".[$extra]"
# torch first, pinned, so nothing later resolves an unpinned (CUDA) build.
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e "$spec"
