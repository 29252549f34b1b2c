#!/usr/bin/env bash
# The README's main job: set up .venv (pinned torch), then a quick benchmark of every loss at small class counts.
# Extra arguments go to `sampledsoftmax bench`, e.g. `bash scripts/run.sh --out bench_out/small.md`.
# Works from any directory; relative paths in the arguments are relative to where you run it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
exec "$root/.venv/bin/sampledsoftmax" bench --sizes 1000,10000 --repeats 5 "$@"
