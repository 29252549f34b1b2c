"""Tests for sampledsoftmax.embeddings.evaluate: exact metrics, bias diagnostics, gensim's word-pair/analogy sets."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sampledsoftmax import AllClassesSampler, DataError, FullSoftmaxLoss, build_loss
from sampledsoftmax.embeddings.evaluate import (
    GENSIM_FILES,
    analogy,
    bias_diagnostics,
    exact_metrics,
    resolve_eval_path,
    word_similarity,
)

V, D = 60, 8


def _pairs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(V, (n,), generator=g), torch.randint(V, (n,), generator=g)


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Embedding(V, D)


# ----------------------------------------------------------------------------------------------- exact_metrics


@pytest.mark.parametrize("name", ["full", "sampled", "negative"])
def test_exact_metrics_match_brute_force(name):
    model = _model()
    torch.manual_seed(1)
    loss_fn = build_loss(name, V, D, **({} if name == "full" else {"num_sampled": 5}))
    with torch.no_grad():
        loss_fn.weight.normal_()  # make the softmax far from uniform
        if loss_fn.bias is not None:
            loss_fn.bias.normal_()
    centers, contexts = _pairs(301)
    got = exact_metrics(loss_fn, model, centers.numpy(), contexts.numpy(), batch_size=64, topk=(1, 5, 10))

    with torch.no_grad():
        logits = model(centers) @ loss_fn.weight.t()
        if loss_fn.bias is not None:
            logits = logits + loss_fn.bias
        ce = F.cross_entropy(logits.double(), contexts).item()
        top = logits.topk(10, dim=1).indices
    assert got.keys() == {"full_ce", "ppl", "top1", "top5", "top10"}
    assert got["full_ce"] == pytest.approx(ce, rel=1e-5)
    assert got["ppl"] == pytest.approx(math.exp(ce), rel=1e-5)
    for k in (1, 5, 10):
        want = (top[:, :k] == contexts[:, None]).any(1).double().mean().item()
        assert got[f"top{k}"] == pytest.approx(want, abs=1e-12)
    assert 0 < got["top1"] < got["top10"] < 1  # the check above is not vacuous
    assert model.weight.grad is None and loss_fn.weight.grad is None


def test_exact_metrics_topk_capped_at_vocabulary_and_empty_is_an_error():
    model, loss_fn = torch.nn.Embedding(4, 3), FullSoftmaxLoss(4, 3)
    got = exact_metrics(loss_fn, model, torch.tensor([0, 1, 2]), torch.tensor([3, 2, 1]), batch_size=2, topk=(1, 10))
    assert got["top10"] == 1.0
    with pytest.raises(DataError):
        exact_metrics(loss_fn, model, torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), 8)


def _expected_hits_brute_force(logits, contexts, k):
    """Top-k accuracy with ties broken uniformly at random, from the definition: among the classes whose logit equals
    the context's, the context takes each place with equal probability; average the hit over those places."""
    total = 0.0
    for z, c in zip(logits.double().tolist(), contexts.tolist()):
        ahead = sum(x > z[c] for x in z)  # places certainly ahead of the context
        group = sum(x == z[c] for x in z)  # the context and its ties
        total += sum(ahead + j < k for j in range(group)) / group
    return total / len(contexts)


@pytest.mark.parametrize("name", ["full", "negative", "adaptive"])
def test_exact_metrics_count_ties_as_expected_hits(name):
    """Integer-valued input vectors and table: many logits tie exactly, and a tie is not a win."""
    g = torch.Generator().manual_seed(5)
    model = torch.nn.Embedding(V, D)
    loss_fn = build_loss(name, V, D, **({"num_sampled": 5} if name == "negative" else {}))
    with torch.no_grad():
        model.weight.copy_(torch.randint(-1, 2, (V, D), generator=g))
        for p in loss_fn.parameters():
            p.copy_(torch.randint(-1, 2, p.shape, generator=g))
    centers, contexts = _pairs(203, seed=6)
    got = exact_metrics(loss_fn, model, centers, contexts, batch_size=50, topk=(1, 5, 10))
    with torch.no_grad():
        logits = loss_fn.logits(model(centers))  # (N, V); the adaptive loss's are its log-probabilities
        ce = F.cross_entropy(logits.double(), contexts).item()
    assert got["full_ce"] == pytest.approx(ce, rel=1e-5)
    for k in (1, 5, 10):
        assert got[f"top{k}"] == pytest.approx(_expected_hits_brute_force(logits, contexts, k), abs=1e-12)
    best_case = (logits > logits.gather(1, contexts[:, None])).sum(1)  # ties counted as wins: the old, biased metric
    assert any(got[f"top{k}"] < (best_case < k).double().mean().item() for k in (1, 5, 10))  # the ties matter here


def test_exact_metrics_of_a_zero_output_table_is_k_over_v():
    """A model that knows nothing (word2vec's zero output table: every logit ties) scores k/V, not 1."""
    model = _model()
    loss_fn = FullSoftmaxLoss(V, D)
    with torch.no_grad():
        loss_fn.weight.zero_()
    centers, contexts = _pairs(97)
    got = exact_metrics(loss_fn, model, centers, contexts, batch_size=40, topk=(1, 10))
    assert got["top1"] == pytest.approx(1 / V, abs=1e-12)
    assert got["top10"] == pytest.approx(10 / V, abs=1e-12)
    assert got["full_ce"] == pytest.approx(math.log(V), rel=1e-6)


def test_skipgram_run_from_a_zero_output_table_logs_chance_top_k_at_step_0(tmp_path):
    """End to end: word2vec's default output init (model.output_init=0, negative sampling without a bias) evaluates
    at step 0 to top-1 = 1/V and top-10 = 10/V in the run's TensorBoard file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sampledsoftmax.embeddings.config import load_config
    from sampledsoftmax.embeddings.train import train

    cfg = load_config(None, [
        f"runs_root={tmp_path}", "name=zero", "data.synthetic.vocab_size=300", "data.synthetic.num_tokens=20000",
        "data.synthetic.num_topics=5", "data.synthetic.heldout_sentences=100", "model.dim=16",
        "optim.batch_size=256", "train.max_steps=2", "eval.every=20", "eval.projector_words=0", "train.device=cpu",
    ])
    assert cfg.loss.name == "negative" and cfg.model.output_init == 0.0  # word2vec's defaults
    result = train(cfg, quiet=True)
    acc = EventAccumulator(str(result["run_dir"]), size_guidance={"scalars": 0})
    acc.Reload()
    first = {tag: acc.Scalars(tag)[0] for tag in ("eval/top1", "eval/top10", "eval/full_ce")}
    assert all(e.step == 0 for e in first.values())
    v = torch.load(result["run_dir"] / "last.pt", weights_only=True)["loss"]["weight"].shape[0]  # the classes
    assert first["eval/full_ce"].value == pytest.approx(math.log(v), rel=1e-6)  # a uniform softmax
    assert first["eval/top1"].value == pytest.approx(1 / v, rel=1e-6)
    assert first["eval/top10"].value == pytest.approx(10 / v, rel=1e-6)


# ----------------------------------------------------------------------------------------------- bias_diagnostics


def _prime_grads(*params):
    """Put known .grad values on the parameters; returns copies to compare against afterwards."""
    saved = []
    for p in params:
        p.grad = torch.full_like(p, 0.25)
        saved.append(p.grad.clone())
    return saved


def test_bias_diagnostics_full_softmax_is_exact():
    model, loss_fn = _model(), FullSoftmaxLoss(V, D)
    centers, contexts = _pairs(128)
    saved = _prime_grads(loss_fn.weight, loss_fn.bias)
    out = bias_diagnostics(loss_fn, model, centers, contexts)
    assert abs(out["exact_minus_objective"]) < 1e-6
    assert out["grad_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(loss_fn.weight.grad, saved[0]) and torch.equal(loss_fn.bias.grad, saved[1])
    assert model.weight.grad is None


@pytest.mark.parametrize("sparse", [False, True])
def test_bias_diagnostics_sampled_over_all_classes_is_exact(sparse):
    model = _model()
    loss_fn = build_loss("sampled", V, D, sampler=AllClassesSampler(V), num_sampled=None, sparse=sparse)
    loss_fn.train()
    centers, contexts = _pairs(128)
    saved = _prime_grads(loss_fn.weight)
    out = bias_diagnostics(loss_fn, model, centers, contexts)
    assert abs(out["exact_minus_objective"]) < 1e-5
    assert out["grad_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(loss_fn.weight.grad, saved[0]) and loss_fn.bias.grad is None and model.weight.grad is None
    assert loss_fn.training  # mode restored


@pytest.mark.parametrize("sparse", [False, True])
def test_bias_diagnostics_few_samples_are_biased(sparse):
    model = _model()
    gen = torch.Generator().manual_seed(3)
    loss_fn = build_loss("sampled", V, D, sampler="uniform", num_sampled=3, sparse=sparse, generator=gen)
    centers, contexts = _pairs(128)
    saved = _prime_grads(loss_fn.weight, loss_fn.bias)
    out = bias_diagnostics(loss_fn, model, centers, contexts)
    assert out["grad_cosine"] < 0.99
    assert out["exact_minus_objective"] > 0.5  # with 3 of 60 classes the sampled CE sits far below the exact one
    assert torch.equal(loss_fn.weight.grad, saved[0]) and torch.equal(loss_fn.bias.grad, saved[1])
    assert model.weight.grad is None


@pytest.mark.parametrize("name", ["nce", "negative", "inbatch"])
def test_bias_diagnostics_other_losses_run_and_leave_no_grads(name):
    model = _model()
    loss_fn = build_loss(name, V, D, **({"num_sampled": 5, "sparse": True} if name != "inbatch" else {}))
    out = bias_diagnostics(loss_fn, model, *_pairs(64))
    assert math.isfinite(out["exact_minus_objective"]) and -1 <= out["grad_cosine"] <= 1
    assert loss_fn.weight.grad is None and model.weight.grad is None


# ----------------------------------------------------------------------------------------------- eval files


def test_resolve_eval_path_gensim_and_errors(tmp_path):
    pytest.importorskip("gensim")
    for kind, name in GENSIM_FILES.items():
        path = resolve_eval_path("gensim", kind)
        assert path.name == name and path.is_file()
    with pytest.raises(DataError, match="pip install gensim"):
        resolve_eval_path("gensim", "wordsim", gensim_module="sampledsoftmax_no_such_module")
    with pytest.raises(DataError, match="not found"):
        resolve_eval_path(str(tmp_path / "missing.tsv"), "simlex")
    own = tmp_path / "pairs.tsv"
    own.write_text("a\tb\t1\n")
    assert resolve_eval_path(str(own), "wordsim") == own
    vocab = SimpleNamespace(words=["a", "b"], counts=np.array([2, 1]))
    with pytest.raises(DataError, match="not found"):
        word_similarity(np.ones((2, 3), np.float32), vocab, tmp_path / "missing.tsv")
    with pytest.raises(DataError, match="not found"):
        analogy(np.ones((2, 3), np.float32), vocab, tmp_path / "missing.txt")


def test_malformed_files_are_data_errors(tmp_path):
    vocab = SimpleNamespace(words=["a", "b"], counts=np.array([2, 1]))
    vectors = np.eye(2, 3, dtype=np.float32)
    bad = tmp_path / "bad.txt"
    bad.write_text("a b c d\n: section\na b a b\n")
    with pytest.raises(DataError, match="before the first"):
        analogy(vectors, vocab, bad)
    bad.write_text("just some text\nwithout tabs\n")
    with pytest.raises(DataError, match="no word pairs"):
        word_similarity(vectors, vocab, bad)


# ----------------------------------------------------------------------------------------------- vs gensim


def _structured_vocab(test_words, rng, drop=0.1, variants=0.15, filler=300):
    """A vocabulary over the test set's words: some dropped (OOV), case variants added, filler words mixed in.

    Returns words (frequency order = a random permutation) and vectors: clusters of 8 topics plus noise, case
    variants close to their word, so cosine similarities carry structure.
    """
    base = sorted({w.lower() for w in test_words})
    kept = [w for w in base if rng.random() > drop]
    words = list(kept)
    for w in kept:
        if rng.random() < variants:
            words.append(w.upper() if rng.random() < 0.5 else w.capitalize())
    words += [f"filler{i}" for i in range(filler)]
    words = list(dict.fromkeys(words))  # distinct
    rng.shuffle(words)
    topics = rng.normal(size=(8, 16))
    vecs = {}
    for w in words:
        key = w.lower()
        if key not in vecs:
            vecs[key] = topics[rng.integers(8)] + 0.7 * rng.normal(size=16)
    vectors = np.stack([vecs[w.lower()] + 0.05 * rng.normal(size=16) for w in words]).astype(np.float32)
    return words, vectors


def _keyed_vectors(words, vectors):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vectors.shape[1])
    kv.add_vectors(words, vectors)
    return kv


def _read_pair_words(path):
    out = []
    for line in open(path, encoding="utf8"):
        if not line.startswith("#"):
            out += line.split("\t")[:2]
    return out


@pytest.mark.parametrize("kind", ["wordsim", "simlex"])
@pytest.mark.parametrize("case_insensitive", [True, False])
def test_word_similarity_equals_gensim(kind, case_insensitive):
    pytest.importorskip("gensim")
    path = resolve_eval_path("gensim", kind)
    rng = np.random.default_rng(0)
    words, vectors = _structured_vocab(_read_pair_words(path), rng)
    restrict = int(0.8 * len(words))
    vocab = SimpleNamespace(words=words, counts=np.arange(len(words), 0, -1))
    ours = word_similarity(vectors, vocab, path, restrict=restrict, case_insensitive=case_insensitive)

    pearson, spearman, oov_pct = _keyed_vectors(words, vectors).evaluate_word_pairs(
        str(path), restrict_vocab=restrict, case_insensitive=case_insensitive
    )
    assert ours["spearman"] == pytest.approx(spearman.statistic, abs=1e-9)
    assert ours["pearson"] == pytest.approx(pearson.statistic, abs=1e-6)
    assert 100 * ours["oov_ratio"] == pytest.approx(oov_pct, abs=1e-9)
    assert ours["pairs"] > 50 and ours["oov_pairs"] > 20  # OOV and restrict actually bite
    assert math.isfinite(ours["spearman"]) and ours["spearman"] != 0
    assert len(np.unique(np.loadtxt(path, delimiter="\t", usecols=2, comments="#"))) < 353  # ties: average ranks


def test_word_similarity_edge_lines_equal_gensim(tmp_path):
    pytest.importorskip("gensim")
    words = ["tiger", "cat", "Tiger", "DOG", "dog", "car", "rare"]
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(len(words), 5)).astype(np.float32)
    path = tmp_path / "pairs.tsv"
    path.write_text(
        "# comment\ttiger\t1\n"
        "tiger\tcat\t7.35\n"
        "TIGER\tdog\t5\n"  # both case variants exist: the most frequent one is used
        "dog\tCar\t2.5\n"
        "cat\tcar\t3\n"
        "cat\tmissing\t4\n"  # OOV
        "cat\trare\t1\n"  # OOV by restrict
        "tiger\tcat\n"  # two fields: skipped, not counted
        "tiger\tcat\tnot-a-number\n"  # skipped, not counted
        "a\tb\tc\td\n"  # four fields: skipped
        "\n"
        "car\ttiger\t8\n",
        encoding="utf8",
    )
    vocab = SimpleNamespace(words=words, counts=np.arange(len(words), 0, -1))
    kv = _keyed_vectors(words, vectors)
    for ci in (True, False):
        ours = word_similarity(vectors, vocab, path, restrict=6, case_insensitive=ci)
        pearson, spearman, oov_pct = kv.evaluate_word_pairs(str(path), restrict_vocab=6, case_insensitive=ci)
        assert ours["spearman"] == pytest.approx(spearman.statistic, abs=1e-9)
        assert ours["pearson"] == pytest.approx(pearson.statistic, abs=1e-6)
        assert 100 * ours["oov_ratio"] == pytest.approx(oov_pct)
    ours = word_similarity(vectors, vocab, path, restrict=6)
    assert (ours["pairs"], ours["oov_pairs"]) == (5, 2)


def _analogy_vocab(path, rng):
    """Vectors where each section's relation is a shared offset (plus noise), with OOV words and case variants."""
    sections, lines = {}, []
    current = None
    for line in open(path, encoding="utf8"):
        if line.startswith(": "):
            current = line[2:].strip()
            sections[current] = rng.normal(size=24)
        elif current is not None and len(line.split()) == 4:
            lines.append((current, line.split()))
    vec = {}
    for sec, (a, b, c, d) in lines:
        for x, y in ((a, b), (c, d)):
            if x not in vec:
                vec[x] = rng.normal(size=24)
            if y not in vec:
                vec[y] = vec[x] + sections[sec] + 0.9 * rng.normal(size=24)
    base = [w for w in vec if rng.random() > 0.05]  # ~5% of the words OOV
    words = list(base)
    extra = {}
    for w in base:
        if rng.random() < 0.1:  # a case variant very close to the word: tests case-insensitive exclusion
            v = w.upper() if w != w.upper() else w.lower()
            extra[v] = vec[w] + 0.01 * rng.normal(size=24)
    words += list(extra) + [f"filler{i}" for i in range(200)]
    words = list(dict.fromkeys(words))
    rng.shuffle(words)
    vectors = np.stack([vec.get(w, extra.get(w, rng.normal(size=24) * 2)) for w in words]).astype(np.float32)
    return words, vectors


def _gensim_counts(sections):
    return [(s["section"], len(s["correct"]), len(s["correct"]) + len(s["incorrect"])) for s in sections]


@pytest.mark.parametrize("case_insensitive", [True, False])
def test_analogy_equals_gensim(case_insensitive, tmp_path):
    pytest.importorskip("gensim")
    full = resolve_eval_path("gensim", "analogy")
    # every 4th question of every section keeps gensim's own (per-question) loop quick
    lines = open(full, encoding="utf8").read().splitlines()
    path = tmp_path / "questions.txt"
    kept = [line for i, line in enumerate(lines) if line.startswith(": ") or i % 4 == 0]
    path.write_text("\n".join(kept) + "\n", encoding="utf8")
    rng = np.random.default_rng(0)
    words, vectors = _analogy_vocab(path, rng)
    restrict = int(0.9 * len(words))
    vocab = SimpleNamespace(words=words, counts=np.arange(len(words), 0, -1))
    ours = analogy(vectors, vocab, path, restrict=restrict, case_insensitive=case_insensitive, batch_size=97)

    score, sections = _keyed_vectors(words, vectors).evaluate_word_analogies(
        str(path), restrict_vocab=restrict, case_insensitive=case_insensitive
    )
    assert ours["accuracy"] == pytest.approx(score, abs=1e-12)
    assert [(s["section"], s["correct"], s["total"]) for s in ours["sections"]] == _gensim_counts(sections)
    assert ours["sections"][-1]["section"] == "Total accuracy"
    assert ours["total"] + ours["oov_questions"] == ours["questions"] == sum(not line.startswith(":") for line in kept)
    assert ours["oov_questions"] > 100 and 0.2 < ours["accuracy"] < 0.9  # OOV, restrict and both outcomes occur


def test_analogy_edge_cases_equal_gensim(tmp_path):
    """Tiny vocabulary: case variants as candidates, fewer than five candidates, empty and repeated sections."""
    pytest.importorskip("gensim")
    words = ["a", "b", "c", "d", "B", "e", "D", "x"]
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(len(words), 4)).astype(np.float32)
    vectors[4] = vectors[1] + 1e-3  # "B" next to "b"
    vectors[6] = vectors[3] + 1e-3  # "D" next to "d"
    path = tmp_path / "q.txt"
    path.write_text(
        ": one\n"
        "a b c d\nA B C D\nb a d c\nc d a b\nd c b a\na b c x\n"
        "a b c\n"  # invalid: skipped, not counted
        "a b c missing\n"
        ": empty\n"
        "q r s t\n"
        ": three\n"
        "a c b d\ne a b x\nx e d a\n",
        encoding="utf8",
    )
    vocab = SimpleNamespace(words=words, counts=np.arange(len(words), 0, -1))
    kv = _keyed_vectors(words, vectors)
    for ci in (True, False):
        for restrict in (len(words), 6, 4):
            ours = analogy(vectors, vocab, path, restrict=restrict, case_insensitive=ci)
            score, sections = kv.evaluate_word_analogies(str(path), restrict_vocab=restrict, case_insensitive=ci)
            assert ours["accuracy"] == pytest.approx(score)
            assert [(s["section"], s["correct"], s["total"]) for s in ours["sections"]] == _gensim_counts(sections)
            assert ours["questions"] == 11


def test_analogy_answer_selection_equals_gensim(tmp_path):
    """gensim's top-5 walk: case variants of the question words are skipped, the question words' own rows do not
    take up the five slots, and when no candidate is acceptable the last one seen is the answer."""
    pytest.importorskip("gensim")
    words = ["p", "qq", "r", "QQ", "R", "Qq", "qQ", "x", "y"]
    rng = np.random.default_rng(5)
    e = np.eye(5)
    base = {"p": e[0], "qq": e[1], "r": e[2], "x": e[3] + 0.3 * e[1], "y": -e[1]}
    vectors = np.stack([base.get(w, base.get(w.lower())) + 0.01 * rng.normal(size=5) for w in words]).astype(np.float32)
    path = tmp_path / "q.txt"
    # restrict=5 leaves QQ and R as the only candidates of "p qq r ?": both are variants, so the last one counts
    path.write_text(
        ": expects-qq\np qq r qq\n: expects-r\np qq r r\n: expects-x\np qq r x\nP QQ R X\n", encoding="utf8"
    )
    vocab = SimpleNamespace(words=words, counts=np.arange(len(words), 0, -1))
    kv = _keyed_vectors(words, vectors)
    for ci in (True, False):
        for restrict in (5, len(words)):
            ours = analogy(vectors, vocab, path, restrict=restrict, case_insensitive=ci)
            score, sections = kv.evaluate_word_analogies(str(path), restrict_vocab=restrict, case_insensitive=ci)
            assert ours["accuracy"] == pytest.approx(score)
            assert [(s["section"], s["correct"], s["total"]) for s in ours["sections"]] == _gensim_counts(sections)
    fallback = analogy(vectors, vocab, path, restrict=5)["sections"]
    assert [s["correct"] for s in fallback[:2]] in ([1, 0], [0, 1])  # exactly one of QQ / R is the last candidate
    assert analogy(vectors, vocab, path)["sections"][2]["correct"] == 2  # x, past four variants of qq and r


def test_resolve_eval_path_checks_the_contents_before_training(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("# comment\nno tabs here\n")
    with pytest.raises(DataError, match=r"no word pairs in eval\.wordsim file .*pairs\.tsv.*set eval\.wordsim"):
        resolve_eval_path(str(pairs), "wordsim")
    pairs.write_bytes("tiger\tcat\t7.35\ncaf\xe9\tbar\t1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"cannot read eval\.wordsim file .*not UTF-8 text \(byte 18\)"):
        resolve_eval_path(str(pairs), "wordsim")
    pairs.write_text("tiger\tcat\t7.35\n")  # fixed: the cache is keyed by size and mtime, so the new file counts
    assert resolve_eval_path(str(pairs), "wordsim") == pairs
    questions = tmp_path / "q.txt"
    questions.write_text(": capitals\n: family\n")
    with pytest.raises(DataError, match="no analogy questions"):
        resolve_eval_path(str(questions), "analogy")
    questions.write_text("athens greece\n: capitals\n")
    with pytest.raises(DataError, match=r"line 1 comes before the first .*Google analogies format"):
        resolve_eval_path(str(questions), "analogy")
    broken = tmp_path / "s.txt.gz"
    broken.write_text("not gzip")
    with pytest.raises(DataError, match=r"cannot read eval\.simlex file .*not a valid \.gz file"):
        resolve_eval_path(str(broken), "simlex")


def test_eval_files_are_read_with_universal_newlines_as_gensim(tmp_path):
    vocab = SimpleNamespace(words=["a", "b", "c"], counts=np.array([3, 2, 1]))
    path = tmp_path / "pairs.tsv"
    path.write_bytes(b"a\tb\t1\r\na\tc\t2\rb\tc\t3\n")  # CRLF, CR and LF line ends
    result = word_similarity(np.eye(3, 4, dtype=np.float32), vocab, path)
    assert result["pairs"] == 3 and result["oov_pairs"] == 0
