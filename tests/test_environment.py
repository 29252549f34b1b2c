"""Every CLI command in a user's environment: TensorFlow and triton installed beside torch (.venv-tf).

There `import tensorflow` then `import torch._dynamo` (torch.optim's first use; the forkserver's preload) aborts the
process: TensorFlow's LLVM and triton's register the same options ("LLVM ERROR: inconsistency in registered
CommandLine options", exit 134). tensorboard imports TensorFlow wherever it is installed unless told not to
(training/tbcompat.py). Each command runs in .venv-tf with PYTHONPROFILEIMPORTTIME=1, which every process it starts
inherits (the forkserver, the children): the import log on stderr names each module imported, and no TensorFlow
module may be among them.

.venv-tf is made by `bash scripts/test.sh` (or the Python named by SAMPLEDSOFTMAX_TF_PYTHON); without it, or with an
old one without torch, these tests are skipped. One with torch but without TensorFlow or triton fails.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
TF_PYTHON = os.environ.get("SAMPLEDSOFTMAX_TF_PYTHON") or str(ROOT / ".venv-tf" / "bin" / "python")


def _has_torch() -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"
    return Path(TF_PYTHON).is_file() and subprocess.run([TF_PYTHON, "-c", probe], timeout=60).returncode == 0


pytestmark = pytest.mark.skipif(not _has_torch(), reason="no user environment: .venv-tf with torch (made by "
                                "`bash scripts/test.sh`; SKIP_TF=1 skips it)")

# "import time:  self_us |  cumulative_us | <2 spaces per nesting level>module"; a progress line without its newline
# may stand before it, so search, not match
_IMPORT = re.compile(r"import time:\s+\d+ \|\s+\d+ \|( *)(\S+)")


class Result(NamedTuple):
    rc: int
    modules: set[str]  # every module imported by the command and by the processes it started
    stderr: str  # stderr less the import log, then who imported TensorFlow: for the failure messages


def run_cli(*args: str, cwd: Path) -> Result:
    """`python -m sampledsoftmax ARGS` in .venv-tf with the import log on."""
    # the checkout goes last on the path: an explicit PYTHONPATH comes first
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))
    env = {**os.environ, "PYTHONPATH": path, "PYTHONPROFILEIMPORTTIME": "1"}
    proc = subprocess.run([TF_PYTHON, "-m", "sampledsoftmax", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    rows, other = [], []
    for line in proc.stderr.splitlines():
        m = _IMPORT.search(line)
        if m:
            rows.append((len(m[1]), m[2]))
        elif not line.startswith("import time:"):  # its header
            other.append(line)
    # the log lists a module after the modules it imported: its importers are the next lines less indented
    for i, (depth, name) in enumerate(rows):
        if name == "tensorflow":
            chain = [name]
            for d, importer in rows[i + 1:]:
                if d < depth:
                    chain.append(importer)
                    depth = d
            other.append("imported: " + " <- ".join(chain))
            break
    return Result(proc.returncode, {name for _, name in rows}, "\n".join(other[-40:]))


TINY = ["data.synthetic.vocab_size=200", "data.synthetic.num_tokens=20000", "data.synthetic.num_topics=5",
        "data.synthetic.heldout_sentences=50", "model.dim=8", "optim.batch_size=256", "train.log_every=5",
        "eval.every=5", "eval.projector_words=10", "train.device=cpu"]
LM_TINY = ["data.synthetic.vocab_size=200", "data.synthetic.num_tokens=12000", "data.synthetic.num_topics=4",
           "data.synthetic.heldout_sentences=40", "data.seq_len=16", "model.dim=16", "optim.batch_size=16",
           "loss.num_sampled=40", "train.max_steps=20", "train.log_every=10", "eval.every=10", "train.device=cpu"]


def _sets(overrides: list[str]) -> list[str]:
    return [a for kv in overrides for a in ("--set", kv)]


COMMANDS = {  # name -> the arguments in the work directory `w`; train's run is made once (export reads it)
    "train-lm": lambda w: ["train-lm", str(ROOT / "configs" / "lm_quick.yaml"), "--quiet",
                           *_sets([f"runs_root={w / 'runs'}", *LM_TINY])],
    "export": lambda w: ["export", str(w / "runs" / "quickstart")],
    "sweep": lambda w: ["sweep", str(w / "sweep.yaml"), "--quiet"],
    "bench": lambda w: ["bench", "--sizes", "1k", "--losses", "full,sampled", "-n", "64", "--dim", "16",
                        "--repeats", "1", "--warmup", "0"],  # isolated: each cell forks from the forkserver
}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("env")
    base = "".join(f"\n  - {kv}" for kv in [*TINY, "train.max_steps=10"])
    (w / "sweep.yaml").write_text(f"name: tiny\nout_dir: {w / 'sweep'}\nbase:{base}\n"
                                  "grid:\n  - loss.name: [sampled, full]\n    optim.name: [adam]\n")
    return w


@pytest.fixture(scope="module")
def trained(work) -> Result:
    """`train configs/quickstart.yaml` with Adam (whose first step imports torch._dynamo), into work/runs."""
    return run_cli("train", str(ROOT / "configs" / "quickstart.yaml"), "--quiet",
                   *_sets([f"runs_root={work / 'runs'}", *TINY, "train.max_steps=20", "optim.name=adam"]), cwd=work)


def test_the_environment_has_tensorflow_and_triton():
    # triton first: the other order is the abort itself (TensorFlow's LLVM, then triton's)
    proc = subprocess.run([TF_PYTHON, "-c", "import triton, tensorflow"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"rerun `bash scripts/test.sh` to install them:\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize("command", ["train", *COMMANDS])
def test_command_imports_no_tensorflow(command, work, request):
    trained = request.getfixturevalue("trained") if command in ("train", "export") else None  # export reads its run
    rc, modules, stderr = trained if command == "train" else run_cli(*COMMANDS[command](work), cwd=work)
    assert rc == 0, stderr
    assert "torch" in modules  # the import log was read: without it the last assertion would prove nothing
    if command != "export":  # the optimizers' or the forkserver's import, the one that aborts beside TensorFlow
        assert "torch._dynamo" in modules
    assert not sorted(m for m in modules if m.split(".")[0] == "tensorflow")[:5], stderr
