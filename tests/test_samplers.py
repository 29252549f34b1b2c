"""Tests for sampledsoftmax.samplers.

Statistical tests use thresholds derived from the number of draws, never tuned: chi-square tests reject at
p = 1e-6 (Wilson–Hilferty quantile), z-tests at |z| > 5.5 (two-sided p ~ 4e-8 per test, < 1e-6 after a Bonferroni
correction over the <= 50 classes tested at once). Every random stream is seeded, so a run is reproducible.
"""

from __future__ import annotations

import ast
import doctest
import io
import math
from pathlib import Path

import pytest
import torch

import sampledsoftmax.samplers as samplers_module
from sampledsoftmax.errors import InputError
from sampledsoftmax.samplers import (
    SAMPLERS,
    AllClassesSampler,
    CandidateSample,
    InBatchSampler,
    LearnedUnigramSampler,
    LogUniformSampler,
    UniformSampler,
    UnigramSampler,
    build_sampler,
    expected_count_unique,
)

V = 50
Z_MAX = 5.5  # two-sided p ~ 4e-8 per z-test
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


# ---- helpers -------------------------------------------------------------------------------------------------------


def gen(seed: int, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def chi2_quantile(df: int, upper_tail: float = 1e-6) -> float:
    """Wilson–Hilferty approximation of the chi-square quantile; z is the standard normal upper quantile."""
    z = {1e-6: 4.753424308822899}[upper_tail]
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def assert_multinomial(observed: torch.Tensor, probs: torch.Tensor) -> None:
    """Chi-square goodness-of-fit of observed class counts to probs, rejecting at p = 1e-6.

    Classes with probability 0 must never be observed and are left out of the statistic.
    """
    observed = observed.to(torch.float64)
    probs = probs.to(torch.float64)
    assert observed[probs == 0].sum() == 0, "a class with probability 0 was drawn"
    keep = probs > 0
    expected = observed.sum() * probs[keep] / probs[keep].sum()
    assert expected.min() >= 5, "test set-up: too few expected counts for the chi-square approximation"
    stat = ((observed[keep] - expected) ** 2 / expected).sum().item()
    df = int(keep.sum()) - 1
    assert stat < chi2_quantile(df), f"chi-square {stat:.1f} > {chi2_quantile(df):.1f} (df={df})"


def log_uniform_probs(num_classes: int, ids: torch.Tensor) -> torch.Tensor:
    """TF's log-uniform definition, written independently of the module."""
    k = ids.to(torch.float64)
    return (torch.log(k + 2) - torch.log(k + 1)) / math.log(num_classes + 1)


def zipf_counts(num_classes: int = V) -> torch.Tensor:
    counts = (1000.0 / torch.arange(1, num_classes + 1, dtype=torch.float64)).floor()  # Zipf-like
    counts[3] = 0  # a class that must never be drawn
    return counts


def make(name: str, num_classes: int = V, **kwargs):
    """Every registry sampler with an interesting distribution (counts for unigram and inbatch)."""
    if name == "unigram":
        return build_sampler(name, num_classes, counts=zipf_counts(num_classes), **kwargs)
    if name == "inbatch":
        return build_sampler(name, num_classes, counts=zipf_counts(num_classes), alpha=0.5)
    if name == "learned_unigram":
        sampler = build_sampler(name, num_classes, refresh_every=1, **kwargs)
        sampler(torch.tensor([[1, 1, 1, 2], [2, 7, 7, -100]]), 4, gen(99))  # learn a non-uniform table
        return sampler
    return build_sampler(name, num_classes, **kwargs)


def sample_size(name: str):
    return None if name in ("all", "inbatch") else 8


DRAWING = [n for n in SAMPLERS]  # every registry sampler can draw (inbatch from its counts)
UNIQUE_CAPABLE = ["uniform", "log_uniform", "unigram", "learned_unigram"]


# ---- the contract, for every registered sampler --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sample_shapes_dtypes_and_padding(name):
    sampler = make(name)
    target = torch.tensor([[0, 5, -100], [49, 2, 2], [-1, -1, -1]])  # (N, T) with padding
    sample = sampler(target, sample_size(name), gen(0))
    assert isinstance(sample, CandidateSample)
    assert sample.ids.dtype == torch.int64 and sample.ids.dim() == 1
    assert sample.log_q_true.dtype == torch.float32 and sample.log_q_true.shape == target.shape
    assert sample.log_q_sampled.dtype == torch.float32 and sample.log_q_sampled.shape == sample.ids.shape
    assert sample.counts is None
    valid_ids = sample.ids[sample.ids >= 0]
    assert bool(((valid_ids >= 0) & (valid_ids < V)).all())
    assert bool((sample.log_q_true[target < 0] == 0).all())
    assert bool(torch.isfinite(sample.log_q_true).all())


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_log_q_is_log_expected_count(name):
    """exp(log_q) / S equals q(id) = exp(log_prob(id)) for the sampled and the true classes."""
    sampler = make(name)
    target = torch.tensor([[0, 5], [49, -100], [7, 2]])
    sample = sampler(target, sample_size(name), gen(1))
    S = sample.ids.numel()
    valid = sample.ids >= 0
    q_sampled = torch.exp(sampler.log_prob(sample.ids.clamp_min(0)).double())
    torch.testing.assert_close(torch.exp(sample.log_q_sampled.double())[valid] / S, q_sampled[valid])
    q_true = torch.exp(sampler.log_prob(target.clamp_min(0)).double())
    expected_true = torch.where(target >= 0, torch.log(S * q_true), 0.0).float()
    torch.testing.assert_close(sample.log_q_true, expected_true)


@pytest.mark.parametrize("name", DRAWING)
def test_draws_follow_log_prob(name):
    sampler = make(name)
    draws = sampler.draw(200_000, gen(2))
    assert draws.shape == (200_000,) and draws.dtype == torch.int64
    observed = torch.bincount(draws, minlength=V)
    assert observed.numel() == V
    assert_multinomial(observed, torch.exp(sampler.log_prob(torch.arange(V)).double()))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_log_prob_is_normalised(name):
    sampler = make(name)
    total = torch.exp(sampler.log_prob(torch.arange(V)).double()).sum().item()
    assert total == pytest.approx(1.0, abs=1e-6)  # float32 table entries


@pytest.mark.parametrize("name", DRAWING)
def test_same_seed_same_sample_other_seed_differs(name):
    target = torch.tensor([[1, 2], [3, 4]])
    a = make(name)(target, sample_size(name), gen(5))
    b = make(name)(target, sample_size(name), gen(5))
    torch.testing.assert_close(a.ids, b.ids)
    torch.testing.assert_close(a.log_q_sampled, b.log_q_sampled)
    s1 = make(name).draw(64, gen(5))
    s2 = make(name).draw(64, gen(5))
    s3 = make(name).draw(64, gen(6))
    assert torch.equal(s1, s2)
    assert not torch.equal(s1, s3)


def test_default_generator_is_torch_global():
    torch.manual_seed(123)
    a = LogUniformSampler(V).draw(32)
    torch.manual_seed(123)
    b = LogUniformSampler(V).draw(32)
    assert torch.equal(a, b)


# ---- closed forms and tables ---------------------------------------------------------------------------------------


def test_log_uniform_matches_tf_formula():
    sampler = LogUniformSampler(V)
    ids = torch.arange(V)
    torch.testing.assert_close(sampler.log_prob(ids).double(), torch.log(log_uniform_probs(V, ids)).float().double())
    assert_multinomial(torch.bincount(sampler.draw(200_000, gen(7)), minlength=V), log_uniform_probs(V, ids))


def test_unigram_from_counts_is_counts_to_the_alpha():
    counts = zipf_counts()
    sampler = UnigramSampler.from_counts(counts.tolist(), alpha=0.75)  # a list works too
    weights = torch.where(counts > 0, counts**0.75, 0.0)
    expected = weights / weights.sum()
    torch.testing.assert_close(torch.exp(sampler.log_prob(torch.arange(V)).double()), expected, rtol=1e-6, atol=0)
    assert_multinomial(torch.bincount(sampler.draw(200_000, gen(8)), minlength=V), expected)


def test_from_counts_leaves_the_callers_tensor_alone():
    counts = zipf_counts()
    before = counts.clone()
    UnigramSampler.from_counts(counts, alpha=0.5)
    assert torch.equal(counts, before)


def test_unigram_alpha_zero_keeps_zero_counts_out():
    sampler = UnigramSampler.from_counts([0, 4, 1, 0], alpha=0.0)
    probs = torch.exp(sampler.log_prob(torch.arange(4)).double())
    torch.testing.assert_close(probs, torch.tensor([0.0, 0.5, 0.5, 0.0], dtype=torch.float64))
    draws = sampler.draw(10_000, gen(9))
    assert set(draws.unique().tolist()) == {1, 2}


def test_log_uniform_huge_vocabulary():
    num_classes = 10**8
    sampler = LogUniformSampler(num_classes)
    assert sum(b.numel() for b in sampler.buffers()) == 0  # closed form, no O(V) table
    n = 200_000
    draws = sampler.draw(n, gen(10))
    assert int(draws.min()) >= 0 and int(draws.max()) < num_classes
    ids = torch.tensor([0, 1, 1000, 12_345_678, num_classes - 1])
    torch.testing.assert_close(sampler.log_prob(ids).double(), torch.log(log_uniform_probs(num_classes, ids)))
    # P(k < K) = log(K + 1) / log(V + 1): a binomial z-test on the head and the tail of the range.
    for K in (10, 10**4, 10**7):
        p = math.log(K + 1) / math.log(num_classes + 1)
        z = ((draws < K).sum().item() - n * p) / math.sqrt(n * p * (1 - p))
        assert abs(z) < Z_MAX, (K, z)


def test_unigram_more_than_2_to_the_24_classes():
    num_classes = 2**25  # torch.multinomial refuses more than 2**24 categories
    counts = torch.zeros(num_classes, dtype=torch.float32)
    counts[1::2] = 1.0  # only odd ids can be drawn; the last id (odd) is drawable, the first is not
    sampler = UnigramSampler.from_counts(counts, alpha=0.75)
    del counts
    draws = sampler.draw(100_000, gen(11))
    assert int(draws.min()) >= 0 and int(draws.max()) < num_classes
    assert bool((draws % 2 == 1).all()), "a class with zero count was drawn"
    # half of the mass lies above 2**24: binomial z-test
    z = ((draws >= 2**24).sum().item() - 50_000) / math.sqrt(100_000 * 0.25)
    assert abs(z) < Z_MAX
    torch.testing.assert_close(
        sampler.log_prob(torch.tensor([1, num_classes - 1])).double(),
        torch.full((2,), -math.log(2**24), dtype=torch.float64),
    )
    assert sampler.log_prob(torch.tensor([0])).item() == -math.inf


def test_tables_keep_dtype_under_half_and_move_with_to():
    sampler = UnigramSampler.from_counts(zipf_counts()).half()
    assert sampler.cdf.dtype == torch.float64 and sampler.probs.dtype == torch.float32
    learned = LearnedUnigramSampler(V).to(torch.bfloat16)
    assert learned.counts.dtype == torch.float64
    assert {name for name, _ in learned.named_buffers()} == {"counts", "num_calls", "probs", "cdf"}


# ---- unique modes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNIQUE_CAPABLE)
def test_unique_true_gives_exactly_s_distinct_ids(name):
    sampler = make(name, unique=True)
    for S in (1, 10, 30):
        sample = sampler(torch.tensor([[0, 1], [2, -100]]), S, gen(S))
        assert sample.ids.shape == (S,)
        assert sample.ids.unique().numel() == S
        assert sample.counts is None
        assert bool((sample.log_q_sampled <= 1e-6).all())  # an expected count of a distinct id is at most 1
        assert sample.log_q_true[1, 1] == 0


def test_unique_true_all_drawable_classes():
    sampler = UnigramSampler.from_counts(zipf_counts(), unique="tf")  # 49 drawable classes
    sample = sampler(torch.tensor([0]), V - 1, gen(12))
    assert sorted(sample.ids.tolist()) == [c for c in range(V) if c != 3]


def test_unique_true_order_of_first_draw_and_num_tries():
    """The ids are the distinct values of the with-replacement stream in the order first drawn; num_tries counts the
    draws up to the one that found the S-th new id. On the CPU a generator produces the same stream whether it is
    consumed in one call or several, so one long draw with the same seed replays the stream."""
    sampler = LogUniformSampler(V)
    S = 12
    ids, num_tries = sampler.draw_unique(S, gen(13))
    stream = sampler.draw(10_000, gen(13)).tolist()
    first_seen = []
    for position, c in enumerate(stream):  # the reference, written as the plain loop
        if c not in first_seen:
            first_seen.append(c)
            if len(first_seen) == S:
                break
    assert ids.tolist() == first_seen
    assert num_tries == position + 1


def test_unique_true_log_q_uses_tf_formula_with_num_tries():
    sampler = LogUniformSampler(V, unique=True)
    target = torch.tensor([[0, 40], [-100, 3]])
    sample = sampler(target, 10, gen(14))
    ids, num_tries = sampler.draw_unique(10, gen(14))
    assert torch.equal(sample.ids, ids)
    q = log_uniform_probs(V, torch.arange(V))
    expected = 1 - (1 - q) ** num_tries  # TF's formula, written plainly
    torch.testing.assert_close(sample.log_q_sampled, torch.log(expected[ids]).float())
    expected_true = torch.where(target >= 0, torch.log(expected[target.clamp_min(0)]), 0.0).float()
    torch.testing.assert_close(sample.log_q_true, expected_true)


def test_tf_formula_is_the_inclusion_probability_for_a_fixed_number_of_draws():
    """1 - (1 - q)**n is exactly the probability that class c appears in n i.i.d. draws."""
    sampler = LogUniformSampler(V)
    R, n = 20_000, 15
    draws = sampler.draw(R * n, gen(15)).view(R, n)  # (R, n)
    present = torch.zeros(R, V, dtype=torch.bool).scatter_(1, draws, True)  # (R, V)
    freq = present.double().mean(0)
    p = expected_count_unique(log_uniform_probs(V, torch.arange(V)), n)
    z = (freq - p) / torch.sqrt(p * (1 - p) / R)
    assert z.abs().max().item() < Z_MAX


def test_unique_true_against_simulation_uniform():
    """Over many calls, compare the inclusion frequency and the formula with their exact values.

    For uniform q every class is included with probability exactly S/V (symmetry). num_tries is a sum of geometric
    variables G_j ~ Geom((V - j)/V), j < S, so E[1 - x**num_tries] with x = 1 - 1/V is
    1 - prod_j p_j x / (1 - (1 - p_j) x). The two differ: TF's formula is an approximation (here by about 2%), so each
    side is tested against its own exact value, within Monte-Carlo tolerance (|z| < 5.5).
    """
    sampler = UniformSampler(V, unique=True)
    S, R = 10, 4000
    g = gen(16)
    inclusion = torch.zeros(V, dtype=torch.float64)
    formula = torch.empty(R, dtype=torch.float64)
    for r in range(R):
        ids, num_tries = sampler.draw_unique(S, g)
        inclusion[ids] += 1
        formula[r] = expected_count_unique(torch.tensor(1.0 / V), num_tries)
    # inclusion: each class, R Bernoulli(S/V) trials
    p = S / V
    z_incl = (inclusion / R - p) / math.sqrt(p * (1 - p) / R)
    assert z_incl.abs().max().item() < Z_MAX
    # formula: its mean over calls against the exact expectation
    x = 1 - 1 / V
    pj = torch.tensor([(V - j) / V for j in range(S)], dtype=torch.float64)
    exact = 1 - torch.prod(pj * x / (1 - (1 - pj) * x)).item()
    z_formula = (formula.mean().item() - exact) / (formula.std().item() / math.sqrt(R))
    assert abs(z_formula) < Z_MAX


@pytest.mark.parametrize("name", UNIQUE_CAPABLE)
def test_multiplicity_counts_and_expected_counts(name):
    sampler = make(name, unique="multiplicity").eval()  # eval: a learned table must stay fixed while pooling
    S, R = 40, 2_000
    g = gen(17)
    pooled = torch.zeros(V, dtype=torch.float64)
    for _ in range(R):
        sample = sampler(torch.tensor([[0, 1], [-100, 5]]), S, g)
        assert sample.counts.dtype == torch.float32 and sample.counts.shape == sample.ids.shape
        assert sample.counts.sum().item() == S
        assert sample.ids.unique().numel() == sample.ids.numel()
        pooled[sample.ids] += sample.counts.double()
    # the pooled counts are R * S i.i.d. draws: their expected count per call is S * q
    q = torch.exp(sampler.log_prob(torch.arange(V)).double())
    torch.testing.assert_close(torch.exp(sample.log_q_sampled.double()), S * q[sample.ids], rtol=1e-6, atol=0)
    assert_multinomial(pooled, q)


def test_per_example_draws():
    sampler = LogUniformSampler(V)
    target = torch.tensor([[0], [1], [2]])
    sample = sampler(target, 6, gen(18), per_example=True)
    assert sample.ids.shape == (3, 6) and sample.log_q_sampled.shape == (3, 6)
    torch.testing.assert_close(
        sample.log_q_sampled.double(), torch.log(6 * log_uniform_probs(V, sample.ids)), rtol=1e-6, atol=1e-6
    )
    assert not torch.equal(sample.ids[0], sample.ids[1])  # independent rows (P(equal) ~ 1e-7)
    with pytest.raises(InputError, match="unique=False"):
        LogUniformSampler(V, unique=True)(target, 6, per_example=True)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_empty_batch(name):
    sample = make(name)(torch.empty(0, 2, dtype=torch.long), sample_size(name), gen(34))
    assert sample.log_q_true.shape == (0, 2)


def test_one_dimensional_target_is_one_true_class():
    sample = UniformSampler(V)(torch.tensor([3, -100, 7]), 5, gen(19))
    assert sample.log_q_true.shape == (3, 1)
    assert sample.log_q_true[1, 0] == 0


# ---- errors --------------------------------------------------------------------------------------------------------


def test_num_samples_above_drawable_classes_with_unique():
    with pytest.raises(InputError, match=r"num_samples.*\[1, 50\].*unique=False"):
        UniformSampler(V, unique=True)(torch.tensor([1]), V + 1)
    with pytest.raises(InputError, match=r"num_samples.*\[1, 49\]"):  # one class has count 0
        UnigramSampler.from_counts(zipf_counts(), unique=True)(torch.tensor([1]), V)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8", None])
def test_num_samples_must_be_a_positive_int(bad):
    with pytest.raises(InputError, match="num_samples"):
        UniformSampler(V)(torch.tensor([1]), bad)


def test_registry_errors():
    with pytest.raises(InputError, match='did you mean "uniform"'):
        build_sampler("unifrom", V)
    with pytest.raises(InputError, match="unigram needs class counts, e.g. from the vocabulary"):
        build_sampler("unigram", V)
    with pytest.raises(InputError, match='did you mean "alpha"'):
        build_sampler("unigram", V, counts=zipf_counts(), alpah=0.5)
    with pytest.raises(InputError, match="num_classes"):
        build_sampler("unigram", V + 1, counts=zipf_counts())
    with pytest.raises(InputError, match="unique"):
        build_sampler("uniform", V, unique="yes")


def test_registry_passes_kwargs():
    sampler = build_sampler("unigram", 3, counts=[8, 1, 1], alpha=1.0, unique="tf")
    assert sampler.unique is True
    torch.testing.assert_close(sampler.log_prob(torch.tensor([0])), torch.log(torch.tensor([0.8])))
    assert build_sampler("learned_unigram", V, refresh_every=7).refresh_every == 7
    assert isinstance(build_sampler("log_uniform", V, counts=zipf_counts()), LogUniformSampler)  # counts ignored


def test_all_classes_sampler_rejects_other_num_samples():
    with pytest.raises(InputError, match="num_samples"):
        AllClassesSampler(V)(torch.tensor([1]), 10)
    sample = AllClassesSampler(V)(torch.tensor([1]), V)
    assert torch.equal(sample.ids, torch.arange(V))
    assert bool((sample.log_q_sampled == 0).all()) and bool((sample.log_q_true == 0).all())


@pytest.mark.parametrize(
    "counts, alpha, match",
    [
        ([0, 0, 0], 0.75, "all zero"),
        ([1, -2, 3], 0.75, "non-negative"),
        ([1, float("nan")], 0.75, "finite"),
        ([1, 2], float("inf"), "alpha"),
        ([[1, 2]], 0.75, "1-D"),
    ],
)
def test_unigram_validation(counts, alpha, match):
    with pytest.raises(InputError, match=match):
        UnigramSampler.from_counts(counts, alpha=alpha)


def test_bad_target():
    with pytest.raises(InputError, match="integer"):
        UniformSampler(V)(torch.tensor([1.0]), 3)
    with pytest.raises(InputError, match="shape"):
        UniformSampler(V)(torch.zeros(2, 2, 2, dtype=torch.long), 3)


# ---- learned unigram -----------------------------------------------------------------------------------------------


def test_learned_unigram_learns_in_train_mode_only():
    sampler = LearnedUnigramSampler(10, init_count=0.5, refresh_every=1)
    sampler(torch.tensor([[2, 2], [5, -100]]), 4, gen(20))
    expected = torch.full((10,), 0.5, dtype=torch.float64)
    expected[2] += 2
    expected[5] += 1
    torch.testing.assert_close(sampler.counts, expected)  # padding counted nowhere (not in class 0 either)
    sampler.eval()
    sampler(torch.tensor([[2, 2], [5, 1]]), 4, gen(21))
    torch.testing.assert_close(sampler.counts, expected)
    assert int(sampler.num_calls) == 1


def test_learned_unigram_refreshes_every_n_calls():
    sampler = LearnedUnigramSampler(10, alpha=1.0, refresh_every=3)
    uniform = torch.full((10,), -math.log(10), dtype=torch.float64)
    target = torch.tensor([[4, 4, 4]])
    for call in (1, 2):
        sample = sampler(target, 5, gen(call))
        torch.testing.assert_close(sampler.log_prob(torch.arange(10)).double(), uniform.float().double())
        assert sample.log_q_true[0, 0].item() == pytest.approx(math.log(5 / 10), rel=1e-6)
    sample = sampler(target, 5, gen(3))  # the third call rebuilds the table before sampling
    q4 = (1 + 9) / (10 + 9)  # class 4: init 1 + 3 calls * 3; total 10 * 1 + 9
    assert sampler.log_prob(torch.tensor([4])).item() == pytest.approx(math.log(q4), rel=1e-6)
    assert sample.log_q_true[0, 0].item() == pytest.approx(math.log(5 * q4), rel=1e-6)  # the current table
    torch.testing.assert_close(
        torch.exp(sample.log_q_sampled.double()) / 5, torch.exp(sampler.log_prob(sample.ids).double())
    )


def test_learned_unigram_state_dict_round_trip_reproduces_samples():
    def fresh():
        return LearnedUnigramSampler(V, alpha=0.75, refresh_every=4)

    trained = fresh()
    g = gen(22)
    for _ in range(6):  # not a multiple of refresh_every: the counter matters
        trained(torch.randint(V, (8, 2), generator=g), 16, g)
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    reloaded = fresh()
    reloaded.load_state_dict(torch.load(buffer, weights_only=True))
    for a, b in zip(trained.state_dict().values(), reloaded.state_dict().values()):
        assert torch.equal(a, b)
    targets = torch.randint(V, (4, 8, 2), generator=gen(23))
    for step in range(4):  # crosses a refresh at call 8 in both
        s1 = trained(targets[step], 16, gen(100 + step))
        s2 = reloaded(targets[step], 16, gen(100 + step))
        assert torch.equal(s1.ids, s2.ids)
        assert torch.equal(s1.log_q_sampled, s2.log_q_sampled)
    assert torch.equal(trained.cdf, reloaded.cdf) and int(reloaded.num_calls) == 10
    assert not torch.equal(trained.cdf, fresh().cdf)


# ---- in-batch ------------------------------------------------------------------------------------------------------


def test_inbatch_ids_are_the_targets():
    target = torch.tensor([[3, 8], [3, -100], [0, 49]])
    sample = InBatchSampler(V)(target, 123, gen(24))  # num_samples ignored
    assert torch.equal(sample.ids, target.reshape(-1))
    assert sample.log_q_sampled[3] == 0 and sample.log_q_true[1, 1] == 0


def test_inbatch_with_counts_is_log_batch_size_times_p():
    counts = zipf_counts()
    sampler = InBatchSampler(V, counts=counts, alpha=0.5)
    target = torch.tensor([[1, 2, 9], [0, -100, 9]])  # N*T = 6
    sample = sampler(target)
    p = torch.where(counts > 0, counts**0.5, 0.0)
    p = p / p.sum()
    expected = torch.where(target >= 0, torch.log(6 * p[target.clamp_min(0)]), 0.0).float()
    torch.testing.assert_close(sample.log_q_true, expected)
    torch.testing.assert_close(sample.log_q_sampled, expected.reshape(-1))


def test_inbatch_streaming_update_by_hand():
    sampler = InBatchSampler(5, ema=0.5)
    sampler(torch.tensor([1, 2]))  # step 1: first sightings, gap = step = 1
    sampler(torch.tensor([[1, -100]]))  # step 2: gap_1 = 0.5 * 1 + 0.5 * (2 - 1) = 1
    sample = sampler(torch.tensor([2, 2, -100]))  # step 3: gap_2 = 0.5 * 1 + 0.5 * (3 - 1) = 1.5
    torch.testing.assert_close(sampler.gap, torch.tensor([0, 1, 1.5, 0, 0], dtype=torch.float64))
    assert sampler.last_step.tolist() == [0, 2, 3, 0, 0]  # padding never touched class 0
    torch.testing.assert_close(sample.log_q_true[:, 0], torch.tensor([-math.log(1.5)] * 2 + [0.0]))
    sampler(torch.tensor([-100, -100]))  # step 4: nothing valid, nothing changes
    torch.testing.assert_close(sampler.gap, torch.tensor([0, 1, 1.5, 0, 0], dtype=torch.float64))
    assert int(sampler.step) == 4
    sampler.eval()
    sample = sampler(torch.tensor([1, 4]))  # eval: no update; class 4 never seen -> gap = step + 1 = 5
    assert int(sampler.step) == 4
    torch.testing.assert_close(sample.log_q_true[:, 0], torch.tensor([-math.log(1.0), -math.log(5.0)]))


def test_inbatch_streaming_estimate_converges():
    """Batches of B = 4 targets from a known distribution for 3000 steps.

    The estimator tracks pi_c = 1 - (1 - p_c)**B, the probability that a batch contains c, which is the expected count
    B * p_c when that is small (here B * p = 0.1125 and pi = 0.108 for the frequent classes). Tolerance: an EMA with
    rate a of geometric gaps has relative standard deviation sqrt(a / (2 - a) * (1 - pi)) ~ 0.067 per class (a = 0.01);
    the mean over the 32 frequent classes ~ 0.012, so 0.06 is 5 standard deviations (the 1/x bias is ~0.5%). Each
    class on its own: 0.40, 6 standard deviations.
    """
    num_classes, B, steps = 64, 4, 3000
    p = torch.cat([torch.full((32,), 0.9 / 32), torch.full((32,), 0.1 / 32)]).double()
    targets = torch.multinomial(p, steps * B, replacement=True, generator=gen(25)).view(steps, B, 1)
    sampler = InBatchSampler(num_classes, ema=0.01)
    for t in targets:
        sample = sampler(t)
    pi = 1 - (1 - p[:32]) ** B
    ratio = (1 / sampler.gap[:32]) / pi
    assert abs(ratio.mean().item() - 1) < 0.06
    assert (ratio - 1).abs().max().item() < 0.40
    torch.testing.assert_close(sample.log_q_true.double(), -torch.log(sampler.gap[targets[-1]]))


def test_inbatch_state_dict_round_trip():
    sampler = InBatchSampler(V, ema=0.1)
    g = gen(26)
    for _ in range(20):
        sampler(torch.randint(V, (6,), generator=g))
    reloaded = InBatchSampler(V, ema=0.1)
    reloaded.load_state_dict(sampler.state_dict())
    target = torch.randint(V, (6,), generator=g)
    assert torch.equal(sampler(target).log_q_true, reloaded(target).log_q_true)
    assert torch.equal(sampler.gap, reloaded.gap) and torch.equal(sampler.step, reloaded.step)


def test_inbatch_without_counts_cannot_draw():
    with pytest.raises(InputError, match="counts"):
        InBatchSampler(V).draw(3)


# ---- module hygiene ------------------------------------------------------------------------------------------------


def test_docstring_examples_run():
    result = doctest.testmod(samplers_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_samplers_module_imports_only_torch_and_stdlib():
    tree = ast.parse(Path(samplers_module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert "numpy" not in imported
    assert imported <= {"__future__", "inspect", "math", "operator", "dataclasses", "typing", "torch"}


def test_candidate_sample_to():
    sample = UniformSampler(V, unique="multiplicity")(torch.tensor([1]), 4, gen(27)).to("cpu")
    assert sample.counts is not None and sample.ids.device.type == "cpu"


# ---- CUDA ----------------------------------------------------------------------------------------------------------


@CUDA
@pytest.mark.parametrize("name", DRAWING)
def test_cuda_draws_on_the_gpu(name):
    sampler = make(name).to("cuda")
    target = torch.tensor([[0, 5], [7, -100]], device="cuda")
    sample = sampler(target, sample_size(name), gen(28, "cuda"))
    for t in (sample.ids, sample.log_q_true, sample.log_q_sampled):
        assert t.device.type == "cuda"
    draws = sampler.draw(1000, gen(29, "cuda"))
    assert draws.device.type == "cuda" and int(draws.max()) < V
    q = torch.exp(sampler.log_prob(sample.ids.clamp_min(0)).double())
    valid = sample.ids >= 0
    torch.testing.assert_close(torch.exp(sample.log_q_sampled.double())[valid] / sample.ids.numel(), q[valid])


@CUDA
@pytest.mark.parametrize("unique", [True, "multiplicity"])
def test_cuda_unique_modes(unique):
    sampler = UnigramSampler.from_counts(zipf_counts(), unique=unique).to("cuda")
    sample = sampler(torch.tensor([1, 2], device="cuda"), 20, gen(30, "cuda"))
    assert sample.ids.device.type == "cuda" and sample.ids.unique().numel() == sample.ids.numel()


@CUDA
def test_cuda_learned_and_inbatch_update_on_gpu():
    learned = LearnedUnigramSampler(V, refresh_every=1).cuda()
    learned(torch.tensor([[3, 3]], device="cuda"), 4, gen(31, "cuda"))
    assert learned.counts[3].item() == 3.0
    inbatch = InBatchSampler(V).cuda()
    inbatch(torch.tensor([3, -100], device="cuda"))
    assert inbatch.gap[3].item() == 1.0 and inbatch.gap[0].item() == 0.0


@CUDA
def test_cuda_device_mismatch_is_an_input_error():
    sampler = UnigramSampler.from_counts(zipf_counts())
    with pytest.raises(InputError, match="sampler.to"):
        sampler(torch.tensor([1], device="cuda"), 4, gen(32, "cuda"))
    with pytest.raises(InputError, match="generator"):
        LogUniformSampler(V)(torch.tensor([1], device="cuda"), 4, gen(33))
