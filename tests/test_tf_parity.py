"""Parity with TensorFlow, the reference semantics of candidate sampling.

Given the same sampled ids and expected counts (`sampled_values=`), our per-example losses must equal
`tf.nn.sampled_softmax_loss` and `tf.nn.nce_loss` to 1e-5, and our samplers' expected counts must equal those that
TensorFlow's own candidate samplers report. `bash scripts/test.sh` installs tensorflow-cpu (the `tf` extra), so this
runs in CI; without TensorFlow it is skipped.
"""

import math

import numpy as np
import pytest
import torch

tf = pytest.importorskip("tensorflow")

from sampledsoftmax import CandidateSample, LogUniformSampler, NCELoss, SampledSoftmaxLoss, UniformSampler  # noqa: E402
from sampledsoftmax.samplers import expected_count_unique  # noqa: E402

V, D, N, S = 500, 16, 32, 64


def _data(seed, num_true):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((V, D)).astype(np.float32) * 0.5
    b = rng.standard_normal(V).astype(np.float32) * 0.5
    h = rng.standard_normal((N, D)).astype(np.float32)
    labels = np.stack([rng.choice(V // 4, num_true, replace=False) for _ in range(N)]).astype(np.int64)  # frequent ids
    return w, b, h, labels


def _tf_sample(labels, num_true, unique, seed):
    return tf.random.log_uniform_candidate_sampler(
        true_classes=tf.constant(labels), num_true=num_true, num_sampled=S, unique=unique, range_max=V, seed=seed
    )


def _ours(cls, w, b, **kw):
    loss = cls(V, D, reduction="none", **kw)
    with torch.no_grad():
        loss.weight.copy_(torch.from_numpy(w))
        loss.bias.copy_(torch.from_numpy(b))
    return loss


@pytest.mark.parametrize("num_true", [1, 3])
@pytest.mark.parametrize("remove_accidental_hits", [True, False])
@pytest.mark.parametrize("unique", [True, False])
def test_sampled_softmax_equals_tf(num_true, remove_accidental_hits, unique):
    w, b, h, labels = _data(0, num_true)
    sampled, true_ec, sampled_ec = _tf_sample(labels, num_true, unique, seed=1)
    ref = tf.nn.sampled_softmax_loss(
        weights=tf.constant(w), biases=tf.constant(b), labels=tf.constant(labels), inputs=tf.constant(h),
        num_sampled=S, num_classes=V, num_true=num_true, sampled_values=(sampled, true_ec, sampled_ec),
        remove_accidental_hits=remove_accidental_hits,
    ).numpy()
    sample = CandidateSample(
        ids=torch.from_numpy(sampled.numpy().astype(np.int64)),
        log_q_true=torch.from_numpy(np.log(true_ec.numpy())),
        log_q_sampled=torch.from_numpy(np.log(sampled_ec.numpy())),
    )
    ids = sampled.numpy()
    assert np.isin(ids, labels).any(), "the test needs accidental hits to mean something"
    loss = _ours(SampledSoftmaxLoss, w, b, remove_accidental_hits=remove_accidental_hits)
    target = torch.from_numpy(labels) if num_true > 1 else torch.from_numpy(labels[:, 0])
    got = loss(torch.from_numpy(h), target, sample=sample).detach().numpy()
    # TF's compute_accidental_hits maps each candidate id to ONE position (the last), so when a with-replacement
    # sample holds a true class twice TF removes only one copy. We remove every copy (the documented semantics).
    dup_hit = np.array([any((ids == c).sum() > 1 for c in row) for row in labels]) & remove_accidental_hits
    assert unique or remove_accidental_hits is False or dup_hit.any(), "seed chosen so the deviation is exercised"
    np.testing.assert_allclose(got[~dup_hit], ref[~dup_hit], rtol=1e-5, atol=1e-5)
    assert (got[dup_hit] < ref[dup_hit]).all()  # one more copy of the positive removed from the partition sum


@pytest.mark.parametrize("num_true", [1, 2])
@pytest.mark.parametrize("remove_accidental_hits", [False, True])
def test_nce_equals_tf(num_true, remove_accidental_hits):
    w, b, h, labels = _data(2, num_true)
    sampled, true_ec, sampled_ec = _tf_sample(labels, num_true, True, seed=3)
    ref = tf.nn.nce_loss(
        weights=tf.constant(w), biases=tf.constant(b), labels=tf.constant(labels), inputs=tf.constant(h),
        num_sampled=S, num_classes=V, num_true=num_true, sampled_values=(sampled, true_ec, sampled_ec),
        remove_accidental_hits=remove_accidental_hits,
    ).numpy()
    sample = CandidateSample(
        ids=torch.from_numpy(sampled.numpy().astype(np.int64)),
        log_q_true=torch.from_numpy(np.log(true_ec.numpy())),
        log_q_sampled=torch.from_numpy(np.log(sampled_ec.numpy())),
    )
    loss = _ours(NCELoss, w, b, remove_accidental_hits=remove_accidental_hits)
    target = torch.from_numpy(labels) if num_true > 1 else torch.from_numpy(labels[:, 0])
    got = loss(torch.from_numpy(h), target, sample=sample).detach().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_log_uniform_expected_counts_equal_tf_with_replacement():
    _, _, _, labels = _data(4, 1)
    sampled, true_ec, sampled_ec = _tf_sample(labels, 1, False, seed=5)
    ours = LogUniformSampler(V)
    ids = torch.from_numpy(sampled.numpy().astype(np.int64))
    np.testing.assert_allclose(np.exp(ours.log_prob(ids).double().numpy() + math.log(S)), sampled_ec.numpy(), rtol=1e-5)
    t = torch.from_numpy(labels)
    np.testing.assert_allclose(np.exp(ours.log_prob(t).double().numpy() + math.log(S)), true_ec.numpy(), rtol=1e-5)


@pytest.mark.parametrize("sampler_name", ["log_uniform", "uniform"])
def test_unique_expected_counts_follow_tf_formula(sampler_name):
    """TF reports 1-(1-q)^num_tries without num_tries; recover it from one class and check every other class."""
    _, _, _, labels = _data(6, 1)
    if sampler_name == "log_uniform":
        sampled, true_ec, sampled_ec = _tf_sample(labels, 1, True, seed=7)
        ours = LogUniformSampler(V)
    else:
        sampled, true_ec, sampled_ec = tf.random.uniform_candidate_sampler(
            true_classes=tf.constant(labels), num_true=1, num_sampled=S, unique=True, range_max=V, seed=7
        )
        ours = UniformSampler(V)
    ids = torch.from_numpy(sampled.numpy().astype(np.int64))
    q = ours.log_prob(ids).double().exp()
    ec = torch.from_numpy(sampled_ec.numpy().astype(np.float64))
    tries = torch.round(torch.log1p(-ec) / torch.log1p(-q)).median()
    assert tries >= S
    np.testing.assert_allclose(expected_count_unique(q, tries).numpy(), ec.numpy(), rtol=1e-4)
    qt = ours.log_prob(torch.from_numpy(labels)).double().exp()
    np.testing.assert_allclose(expected_count_unique(qt, tries).numpy(), true_ec.numpy(), rtol=1e-4)
