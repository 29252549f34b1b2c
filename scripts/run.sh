#!/usr/bin/env bash
# The README's main job: set up .venv (pinned torch), then train the quickstart (the built-in planted corpus,
# no downloads) and print where the TensorBoard logs are. Extra arguments go to `sampledsoftmax train`,
# e.g. `bash scripts/run.sh --set loss.name=sampled`. Works from any directory; runs/ is created where you run it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
exec "$root/.venv/bin/sampledsoftmax" train "$root/configs/quickstart.yaml" "$@"
