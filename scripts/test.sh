#!/usr/bin/env bash
# Set up .venv with the test dependencies, and .venv-tf with TensorFlow for the parity tests (tests/tf/reference.py
# runs there: TensorFlow is kept out of .venv because importing it changes what torch.utils.tensorboard loads and
# prints), then run the default test suite (slow tests excluded).
# .venv-tf is also a user's environment: TensorFlow, torch with triton (every CUDA build of torch brings it) and this
# package; tests/test_environment.py runs each CLI command there (TensorFlow's LLVM beside triton's aborts a process).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow`. SKIP_TF=1 skips the TensorFlow set-up.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" dev
cd "$root"
if [ "${SKIP_TF:-0}" != "1" ]; then
  [ -x .venv-tf/bin/python ] || "${PYTHON:-python3}" -m venv .venv-tf
  # torch first, pinned, as scripts/setup.sh does, so nothing later resolves an unpinned (CUDA) build.
  .venv-tf/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt "torch==2.13.0"
  .venv-tf/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt \
    "tensorflow-cpu==2.21.0" numpy "triton==3.9.0" -e .
fi
exec .venv/bin/python -m pytest "$@"
