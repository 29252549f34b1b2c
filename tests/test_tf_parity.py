"""Parity with TensorFlow, the reference semantics of candidate sampling.

Given the same sampled ids and expected counts (`sampled_values=`), our per-example losses must equal
`tf.nn.sampled_softmax_loss` and `tf.nn.nce_loss` to 1e-5, and our samplers' expected counts must equal those that
TensorFlow's own candidate samplers report.

TensorFlow runs in its own virtualenv (`.venv-tf`, made by `bash scripts/test.sh`; or the Python named by
SAMPLEDSOFTMAX_TF_PYTHON) through `tests/tf/reference.py`: importing TensorFlow next to torch would change what
`torch.utils.tensorboard` imports and prints. Without it these tests are skipped.
"""

import itertools
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from sampledsoftmax import CandidateSample, LogUniformSampler, NCELoss, SampledSoftmaxLoss, UniformSampler
from sampledsoftmax.samplers import expected_count_unique

ROOT = Path(__file__).resolve().parents[1]
TF_PYTHON = os.environ.get("SAMPLEDSOFTMAX_TF_PYTHON") or str(ROOT / ".venv-tf" / "bin" / "python")
pytestmark = pytest.mark.skipif(not Path(TF_PYTHON).is_file(), reason="no TensorFlow virtualenv (.venv-tf)")

V, D, N, S = 500, 16, 32, 64


def _tf(cases: dict, tmp: Path) -> dict:
    """Run tests/tf/reference.py on {case: {field: array}}; returns {case: {field: array}}."""
    src, dst = tmp / "in.npz", tmp / "out.npz"
    np.savez(src, **{f"{c}/{k}": np.asarray(v) for c, fields in cases.items() for k, v in fields.items()})
    subprocess.run([TF_PYTHON, str(ROOT / "tests" / "tf" / "reference.py"), str(src), str(dst)], check=True,
                   capture_output=True, timeout=300)
    out: dict = {}
    for k, v in np.load(dst).items():
        c, f = k.split("/", 1)
        out.setdefault(c, {})[f] = v
    return out


def _data(seed, num_true):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((V, D)).astype(np.float32) * 0.5
    b = rng.standard_normal(V).astype(np.float32) * 0.5
    h = rng.standard_normal((N, D)).astype(np.float32)
    labels = np.stack([rng.choice(V // 4, num_true, replace=False) for _ in range(N)]).astype(np.int64)  # frequent
    return w, b, h, labels


LOSS_CASES = [
    ("sampled_softmax", nt, hits, uniq) for nt, hits, uniq in itertools.product([1, 3], [True, False], [True, False])
] + [("nce", nt, hits, True) for nt, hits in itertools.product([1, 2], [False, True])]


def _name(case):
    return "{}-T{}-hits{}-unique{}".format(*case)


@pytest.fixture(scope="module")
def tf_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tf")
    samples = {}
    for i, (op, nt, hits, uniq) in enumerate(LOSS_CASES):
        _, _, _, labels = _data(i, nt)
        samples[_name((op, nt, hits, uniq))] = dict(op="sample_log_uniform", labels=labels, num_true=nt, num_sampled=S,
                                                    unique=uniq, range_max=V, seed=100 + i)
    _, _, _, labels = _data(50, 1)
    for name, op in (("lu_replace", "sample_log_uniform"),):
        samples[name] = dict(op=op, labels=labels, num_true=1, num_sampled=S, unique=False, range_max=V, seed=7)
    for name, op in (("lu_unique", "sample_log_uniform"), ("u_unique", "sample_uniform")):
        samples[name] = dict(op=op, labels=labels, num_true=1, num_sampled=S, unique=True, range_max=V, seed=8)
    drawn = _tf(samples, tmp)
    losses = {}
    for i, (op, nt, hits, uniq) in enumerate(LOSS_CASES):
        w, b, h, labels = _data(i, nt)
        d = drawn[_name((op, nt, hits, uniq))]
        losses[_name((op, nt, hits, uniq))] = dict(
            op=op, weights=w, biases=b, labels=labels, inputs=h, num_sampled=S, num_classes=V, num_true=nt,
            sampled=d["sampled"], true_ec=d["true_ec"], sampled_ec=d["sampled_ec"], remove_accidental_hits=hits,
        )
    return drawn, _tf(losses, tmp)


def _ours(case, drawn):
    op, nt, hits, _ = case
    i = LOSS_CASES.index(case)
    w, b, h, labels = _data(i, nt)
    d = drawn[_name(case)]
    sample = CandidateSample(ids=torch.from_numpy(d["sampled"].astype(np.int64)),
                             log_q_true=torch.from_numpy(np.log(d["true_ec"])),
                             log_q_sampled=torch.from_numpy(np.log(d["sampled_ec"])))
    cls = SampledSoftmaxLoss if op == "sampled_softmax" else NCELoss
    loss = cls(V, D, reduction="none", remove_accidental_hits=hits)
    with torch.no_grad():
        loss.weight.copy_(torch.from_numpy(w))
        loss.bias.copy_(torch.from_numpy(b))
    target = torch.from_numpy(labels) if nt > 1 else torch.from_numpy(labels[:, 0])
    return loss(torch.from_numpy(h), target, sample=sample).detach().numpy(), d["sampled"], labels


@pytest.mark.parametrize("case", LOSS_CASES, ids=[_name(c) for c in LOSS_CASES])
def test_losses_equal_tf_given_the_same_sample(case, tf_results):
    drawn, ref = tf_results
    got, ids, labels = _ours(case, drawn)
    want = ref[_name(case)]["loss"]
    assert np.isin(ids, labels).any(), "the sample must hold accidental hits for the test to mean something"
    dup_hit = np.zeros(len(labels), dtype=bool)
    if case[0] == "sampled_softmax" and case[2]:
        # TF's compute_accidental_hits maps each candidate id to ONE position (the last), so when a with-replacement
        # sample holds a true class twice TF removes only one copy. We remove every copy (documented semantics).
        dup_hit = np.array([any((ids == c).sum() > 1 for c in row) for row in labels])
    np.testing.assert_allclose(got[~dup_hit], want[~dup_hit], rtol=1e-5, atol=1e-5)
    assert (got[dup_hit] < want[dup_hit]).all()  # one more copy of the positive out of the partition sum


def test_log_uniform_expected_counts_equal_tf_with_replacement(tf_results):
    d = tf_results[0]["lu_replace"]
    ours = LogUniformSampler(V)
    ids = torch.from_numpy(d["sampled"].astype(np.int64))
    np.testing.assert_allclose(np.exp(ours.log_prob(ids).double().numpy() + math.log(S)), d["sampled_ec"], rtol=1e-5)
    _, _, _, labels = _data(50, 1)
    np.testing.assert_allclose(np.exp(ours.log_prob(torch.from_numpy(labels)).double().numpy() + math.log(S)),
                               d["true_ec"], rtol=1e-5)


@pytest.mark.parametrize("name, sampler", [("lu_unique", LogUniformSampler(V)), ("u_unique", UniformSampler(V))])
def test_unique_expected_counts_follow_tf_formula(tf_results, name, sampler):
    """TF reports 1-(1-q)^num_tries without num_tries; recover it from the samples and check every class."""
    d = tf_results[0][name]
    ids = torch.from_numpy(d["sampled"].astype(np.int64))
    assert len(set(ids.tolist())) == S
    q = sampler.log_prob(ids).double().exp()
    ec = torch.from_numpy(d["sampled_ec"].astype(np.float64))
    # no duplicate among the draws: TF's shortcut reports S·q; otherwise 1-(1-q)^tries, tries > S
    tries = S if np.allclose(ec.numpy(), S * q.numpy(), rtol=1e-5) else torch.round(torch.log1p(-ec) / torch.log1p(-q)).median()
    assert tries >= S
    np.testing.assert_allclose(expected_count_unique(q, tries, S).numpy(), ec.numpy(), rtol=1e-4)
    _, _, _, labels = _data(50, 1)
    qt = sampler.log_prob(torch.from_numpy(labels)).double().exp()
    np.testing.assert_allclose(expected_count_unique(qt, tries, S).numpy(), d["true_ec"], rtol=1e-4)
