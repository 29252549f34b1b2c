"""Evaluation of a skip-gram model: exact held-out metrics, the sampled objective's bias, word similarity, analogies.

Held-out metrics (the same for every loss, so runs with different losses compare):

    full_ce = (1/N) Σ_i −log softmax(h_i Wᵀ + b)[c_i],   h_i = model(w_i),   ppl = exp(full_ce)
    top-k   = (1/N) Σ_i P(c_i ∈ the k most probable classes under that softmax, ties broken uniformly at random)
            = (1/N) Σ_i clamp((k − g_i) / (e_i + 1), 0, 1),
    g_i = #{c : z_ic > z_i,c_i},   e_i = #{c ≠ c_i : z_ic = z_i,c_i}   (ties with the context: its places g_i .. g_i + e_i)

with z_i = h_i Wᵀ + b: a model whose logits all tie (word2vec's zero output table at step 0) scores k/V, not 1.

Bias diagnostics of a sampled objective L̃ against the exact cross entropy L on one batch:

    exact_minus_objective = L − L̃,   grad_cosine = ⟨∇_W L̃, ∇_W L⟩ / (‖∇_W L̃‖ ‖∇_W L‖)

Word similarity and analogies follow gensim's `KeyedVectors.evaluate_word_pairs` / `evaluate_word_analogies`
(gensim 4.x) exactly, so numbers cross-check when exported vectors are loaded into gensim:

- Only the `restrict` most frequent words are known. With `case_insensitive`, words and test items are compared
  upper-cased, and an upper-cased key stands for its most frequent case variant.
- Word pairs: lines starting with "#" are comments; a line that does not split into exactly three fields on the
  delimiter, or whose third field is not a number, is skipped and not counted. A pair with an unknown word is an
  OOV pair: skipped and counted. similarity = cos(v_a, v_b); Spearman (average ranks for ties) and Pearson
  correlation against the human scores.
- Analogies "a b c d" (a is to b as c is to d), grouped by ": section" lines: 3CosAdd,
  d̂ = argmax_{w ∈ first restrict words} cos(v_w, v̂_b + v̂_c − v̂_a) (v̂ unit-normalised), where the candidates
  are gensim's five best after dropping the rows of a, b and c; the first of them whose (upper-cased) word differs from
  a, b and c is the answer (if none does, the fifth). Correct iff its (upper-cased) word equals d. A line that is
  not four words is skipped; a question with an unknown word is an OOV question: skipped and counted.
  accuracy = correct / answered (0.0 when nothing was answered, as gensim).
"""

from __future__ import annotations

import functools
import importlib
import io
import math
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..data.textfile import read_text
from ..errors import DataError, InputError
from ..functional import expected_topk_hit
from ..losses import FullSoftmaxLoss

__all__ = ["exact_metrics", "bias_diagnostics", "resolve_eval_path", "word_similarity", "analogy", "GENSIM_FILES"]

# the copies of the standard sets that ship inside gensim's test data
GENSIM_FILES = {"wordsim": "wordsim353.tsv", "simlex": "simlex999.txt", "analogy": "questions-words.txt"}

_ANALOGY_TOPN = 5  # gensim's evaluate_word_analogies looks at most_similar(..., topn=5)
_BLOCK_ELEMENTS = 1 << 24  # (questions × restrict) similarity block: 64 MB of float32


# ------------------------------------------------------------------------------------------------ held-out metrics


def _as_ids(x: Any, device: torch.device) -> Tensor:
    return torch.as_tensor(x).to(device=device, dtype=torch.long)


@torch.no_grad()
def exact_metrics(
    loss_fn, model, centers, contexts, batch_size: int, topk: Sequence[int] = (1, 10)
) -> dict[str, float]:
    """Exact full-softmax cross entropy, perplexity and top-k accuracy of `model` + `loss_fn` on (center, context).

    full_ce = mean exact NLL of the contexts (nats), ppl = exp(full_ce), and "top{k}" = the fraction of contexts
    ranked among the k best classes (k is capped at V), a context tied with other classes counting for the share of
    its tied places that fall within the k best (`functional.expected_topk_hit`: the expectation under ties broken
    uniformly at random), both from one chunked pass over V per batch (`loss_fn.exact_nll_and_rank`). Batches of
    `batch_size` pairs, float64 sums, one host sync at the end. Modes of `model` and `loss_fn` are left as they were.

    Shape:
        centers (N,), contexts (N,) int (tensor or numpy) -> {"full_ce", "ppl", "top1", "top10"} (for topk=(1, 10))
    """
    n = len(centers)
    if n == 0:
        raise DataError("no held-out pairs to evaluate on; raise data.heldout_fraction or data.max_heldout_pairs")
    if len(contexts) != n:
        raise InputError(f"centers has {n} entries but contexts has {len(contexts)}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    ks = sorted({min(int(k), loss_fn.num_classes) for k in topk})
    if not ks or ks[0] < 1:
        raise InputError(f"topk must be positive ints, got {tuple(topk)}")
    device = next(loss_fn.parameters()).device
    nll_sum = torch.zeros((), dtype=torch.float64, device=device)
    hits = torch.zeros(len(ks), dtype=torch.float64, device=device)
    for i in range(0, n, batch_size):
        c = _as_ids(centers[i : i + batch_size], device)  # (B,)
        t = _as_ids(contexts[i : i + batch_size], device)  # (B,)
        hidden = model(c)  # (B, d)
        nll, greater, ties = loss_fn.exact_nll_and_rank(hidden, t)  # (B,) each: CE and top-k in one pass over V
        nll_sum += nll.double().sum()
        hits += torch.stack([expected_topk_hit(greater, ties, k).sum() for k in ks])  # float64 expected hits
    full_ce = float(nll_sum) / n  # the one host sync
    hit_counts = hits.tolist()
    out = {"full_ce": full_ce, "ppl": math.exp(full_ce) if full_ce < 709.0 else math.inf}
    for k_asked in topk:
        k = min(int(k_asked), loss_fn.num_classes)
        out[f"top{int(k_asked)}"] = hit_counts[ks.index(k)] / n
    return out


def bias_diagnostics(loss_fn, model, centers, contexts) -> dict[str, float]:
    """How far the training objective is from the exact cross entropy on one batch, in value and in gradient.

        exact_minus_objective = mean_i exact_nll_i − objective,   objective = loss_fn(h, c) averaged over the batch
        grad_cosine = cos(∇_W objective, ∇_W exact),   exact = FullSoftmaxLoss sharing loss_fn's weight and bias

    W = `loss_fn.weight` (sparse gradients are densified). For the full softmax the gap is 0 and the cosine 1; for a
    sampled softmax over all classes (AllClassesSampler) too; fewer samples give a biased, noisy gradient (cosine < 1).
    NCE and negative sampling optimise another objective, so their gap is not a bias of an estimate of L.

    The hidden states are computed without a graph and the gradients with `torch.autograd.grad`, so no `.grad` of
    the model or the loss changes. `loss_fn` runs in eval mode (stateful samplers do not learn from the batch) and
    draws its samples from `loss_fn.generator`: give it a separate generator so training's random stream is unmoved.

    Shape:
        centers (B,), contexts (B,) int -> {"exact_minus_objective": float, "grad_cosine": float}
    """
    device = loss_fn.weight.device
    c, t = _as_ids(centers, device), _as_ids(contexts, device)
    if c.numel() == 0:
        raise InputError("bias_diagnostics needs a non-empty batch")
    was_training = loss_fn.training
    loss_fn.eval()
    try:
        with torch.no_grad():
            hidden = model(c).detach()  # (B, d)
            exact_mean = loss_fn.exact_nll(hidden, t).double().mean()
        objective = _mean_objective(loss_fn, hidden, t)
        exact = FullSoftmaxLoss(
            loss_fn.num_classes, loss_fn.dim, weight=loss_fn.weight, bias=loss_fn.bias,
            memory_budget_mb=loss_fn.memory_budget_mb,
        )(hidden, t)
        weight = loss_fn.weight
        if weight.requires_grad:
            g_obj = _dense(torch.autograd.grad(objective, weight, allow_unused=True)[0], weight)  # (V, d)
            g_exact = _dense(torch.autograd.grad(exact, weight)[0], weight)  # (V, d)
            dot = (g_obj * g_exact).sum()
            norms = g_obj.norm() * g_exact.norm()
            cosine = float(dot / norms) if float(norms) > 0 else math.nan
        else:  # a frozen table has no gradient to compare
            cosine = math.nan
        gap = float(exact_mean - objective.detach().double())
    finally:
        loss_fn.train(was_training)
    return {"exact_minus_objective": gap, "grad_cosine": cosine}


def _mean_objective(loss_fn, hidden: Tensor, target: Tensor) -> Tensor:
    """The training objective averaged over the batch, whatever the loss's reduction."""
    value = loss_fn(hidden, target)
    if loss_fn.reduction == "sum":
        return value / target.numel()
    if loss_fn.reduction == "none":
        return value.mean()
    return value


def _dense(grad: Optional[Tensor], like: Tensor) -> Tensor:
    if grad is None:
        return torch.zeros_like(like, dtype=torch.float64)
    return (grad.to_dense() if grad.is_sparse else grad).double()


# ------------------------------------------------------------------------------------------------ evaluation files


def resolve_eval_path(value: str, kind: str, *, gensim_module: str = "gensim.test.utils") -> Path:
    """The file behind `eval.<kind>`: "gensim" → the copy in gensim's installed test data, otherwise a path.

    kind: "wordsim" (WordSim-353), "simlex" (SimLex-999) or "analogy" (Google analogies). `gensim_module` is the
    module whose `datapath(name)` locates the test data. Raises DataError (one line, with the fix) when gensim is not
    installed or the file is missing/unreadable.
    """
    if kind not in GENSIM_FILES:
        raise ValueError(f"kind must be one of {sorted(GENSIM_FILES)}, got {kind!r}")
    if value == "gensim":
        try:
            datapath = importlib.import_module(gensim_module).datapath
        except (ImportError, AttributeError):
            raise DataError(
                f'eval.{kind}="gensim" uses the copy of {GENSIM_FILES[kind]} in gensim\'s test data, but '
                f"{gensim_module}.datapath cannot be imported: pip install gensim, or set eval.{kind} to a file path"
            ) from None
        path = Path(datapath(GENSIM_FILES[kind]))
    else:
        path = Path(value).expanduser()
    _check_readable(path, kind)
    st = path.stat()
    _check_contents(str(path), kind, st.st_size, st.st_mtime_ns)  # before training starts, not at the first eval
    return path


@functools.lru_cache(maxsize=32)
def _check_contents(path: str, kind: str, size: int, mtime_ns: int) -> None:
    """DataError unless the file parses as its kind with at least one item (the rules of word_similarity and
    analogy, with their default delimiter and case handling). Cached by (path, size, mtime): resolve_eval_path
    runs at every evaluation."""
    what = "analogies" if kind == "analogy" else "word pairs"
    fix = f'set eval.{kind} to a file of {what} (or to "gensim")'
    text = read_text(path, f"eval.{kind} file", fix, compressed=True)
    lines = io.StringIO(text, newline=None).readlines()
    if kind == "analogy":
        if not _parse_analogies(lines, path, True)[2]:
            raise DataError(f'no analogy questions in eval.analogy file {path}: expected ": section" lines and '
                            f"lines of four words; {fix}")
    elif not _parse_pairs(lines, "\t", True):
        raise DataError(f"no word pairs in eval.{kind} file {path}: expected lines 'word1<TAB>word2<TAB>score'; "
                        f"{fix}")


def _check_readable(path: Path, kind: str) -> None:
    if not path.is_file():
        raise DataError(f'{kind} evaluation file not found: {path}; set eval.{kind} to an existing file or to "gensim"')
    if not os.access(path, os.R_OK):
        raise DataError(f"{kind} evaluation file is not readable: {path}; fix its permissions or set eval.{kind}")


def _read_lines(path, kind: str, encoding: str) -> list[str]:
    """All lines of a text file (.gz/.bz2 decompressed), with their line ends, as gensim iterates them (universal
    newlines, as a file opened in text mode). Every failure is one DataError line (data/textfile.py)."""
    path = Path(path)
    _check_readable(path, kind)
    text = read_text(path, f"{kind} evaluation file", "check the file", compressed=True, encoding=encoding)
    return io.StringIO(text, newline=None).readlines()


# ------------------------------------------------------------------------------------------------ vocabulary


def _words(vocab) -> list[str]:
    words = getattr(vocab, "words", None)
    if words is None:
        raise InputError(f"vocab must have .words (a list of words, id = rank), got {type(vocab).__name__}")
    return list(words)


def _known(words: Sequence[str], restrict: Optional[int], case_insensitive: bool) -> tuple[dict[str, int], list[str]]:
    """gensim's ok_vocab: key → id over the first `restrict` words; a key's id is its most frequent variant's."""
    if restrict is not None and restrict < 1:
        raise InputError(f"restrict must be >= 1 or None, got {restrict}")
    ok_words = words[:restrict]
    keys = [w.upper() for w in ok_words] if case_insensitive else list(ok_words)
    # inserted in reverse, so that the first (most frequent) occurrence of a key is the one kept
    known = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1)))
    return known, keys


def _unit_rows(vectors, rows: Optional[int] = None) -> Tensor:
    """Float32 rows of `vectors` (numpy or torch) scaled to unit L2 norm, as gensim's get_normed_vectors."""
    v = torch.as_tensor(vectors[:rows] if rows is not None else vectors)
    if v.dim() != 2:
        raise InputError(f"vectors must be 2-D [V, d], got shape {tuple(v.shape)}")
    v = v.detach().to(torch.float32)
    return v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)  # (R, d)


def _check_vectors(vectors, words: Sequence[str]) -> None:
    shape = tuple(vectors.shape)
    if len(shape) != 2 or shape[0] != len(words):
        raise InputError(
            f"vectors has shape {shape} but the vocabulary has {len(words)} words; expected ({len(words)}, d)"
        )


# ------------------------------------------------------------------------------------------------ word similarity


def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy.stats.rankdata's "average")."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # first position of each run of equal values
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2:
        return math.nan
    xm, ym = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(xm @ xm) * float(ym @ ym))
    return float(xm @ ym) / denom if denom > 0 else math.nan


def _parse_pairs(lines: Iterable[str], delimiter: str, case_insensitive: bool) -> list[tuple[str, str, float]]:
    """The well-formed (word1, word2, score) lines, as gensim's evaluate_word_pairs reads them (module docstring):
    comments and lines that are not three fields with a numeric score are skipped."""
    out = []
    for line in lines:
        if line.startswith("#"):
            continue
        fields = line.split(delimiter)
        if len(fields) != 3:
            continue
        a, b, score = (f.upper() for f in fields) if case_insensitive else fields
        try:
            out.append((a, b, float(score)))
        except ValueError:
            continue
    return out


def word_similarity(
    vectors,
    vocab,
    path,
    restrict: Optional[int] = 300_000,
    case_insensitive: bool = True,
    delimiter: str = "\t",
    encoding: str = "utf8",
) -> dict[str, float]:
    """Correlation of cosine similarities with human scores (WordSim-353, SimLex-999), as gensim's evaluate_word_pairs.

    Lines: "word1<delimiter>word2<delimiter>score"; "#" starts a comment line. See the module docstring for the
    exact rules. Returns spearman, pearson (NaN with fewer than two known pairs), pairs (known pairs scored),
    oov_pairs (pairs with an unknown word, skipped), oov_ratio = oov_pairs / (pairs + oov_pairs) — a fraction,
    where gensim reports the same number as a percentage. A file without a single well-formed line is a DataError.

    Shape:
        vectors [V, d] float (numpy or torch), vocab.words V words by id -> dict
    """
    words = _words(vocab)
    _check_vectors(vectors, words)
    known, _ = _known(words, restrict, case_insensitive)
    gold, ia, ib = [], [], []
    oov = 0
    for a, b, score in _parse_pairs(_read_lines(path, "word-similarity", encoding), delimiter, case_insensitive):
        if a not in known or b not in known:
            oov += 1
            continue
        gold.append(score)
        ia.append(known[a])
        ib.append(known[b])
    if not gold and not oov:
        raise DataError(
            f"no word pairs in {path}: expected lines 'word1{delimiter!r}word2{delimiter!r}score'; "
            "check the file and the delimiter"
        )
    unit = _unit_rows(vectors, restrict)  # (R, d)
    sims = (unit[ia] * unit[ib]).sum(1).numpy().astype(np.float64)  # (P,) cosine of each known pair
    gold_arr = np.asarray(gold, dtype=np.float64)
    pearson = _pearson(gold_arr, sims)
    spearman = _pearson(_rank(gold_arr), _rank(sims)) if len(gold) >= 2 else math.nan
    return {
        "spearman": spearman,
        "pearson": pearson,
        "pairs": len(gold),
        "oov_pairs": oov,
        "oov_ratio": oov / (len(gold) + oov),
    }


# ------------------------------------------------------------------------------------------------ analogies


def _parse_analogies(lines: Iterable[str], path, case_insensitive: bool) -> tuple[list[str], list[int], list[tuple]]:
    """-> section names, section index per question, questions (a, b, c, d) as compared (upper-cased or not)."""
    names: list[str] = []
    section_of: list[int] = []
    questions: list[tuple] = []
    for line_no, line in enumerate(lines):
        if line.startswith(": "):
            names.append(line.lstrip(": ").strip())
            continue
        if not names:
            if not line.strip():
                continue  # gensim would fail on a blank line before the first section; we skip it
            raise DataError(
                f'{path}: line {line_no + 1} comes before the first ": section" line; is this an analogy file? '
                f'Give one in the Google analogies format (": section" lines, then "a b c d" lines)'
            )
        parts = line.split()
        if len(parts) != 4:
            continue  # gensim skips (and does not count) lines that are not four words
        questions.append(tuple(p.upper() for p in parts) if case_insensitive else tuple(parts))
        section_of.append(len(names) - 1)
    return names, section_of, questions


def analogy(
    vectors,
    vocab,
    path,
    restrict: Optional[int] = 300_000,
    case_insensitive: bool = True,
    *,
    batch_size: Optional[int] = None,
    device: Optional[torch.device] = None,
    encoding: str = "utf8",
) -> dict[str, Any]:
    """3CosAdd analogy accuracy (Google analogies file), as gensim's evaluate_word_analogies.

    For each known question "a b c d": scores = U_R q with U_R the first `restrict` unit-normalised vectors and
    q = û_b + û_c − û_a; the rows of a, b and c are excluded and the answer is picked from the top five as gensim
    does (module docstring). Questions are answered in blocks of `batch_size` (default: a 64 MB score block) by
    one matrix product and one top-k each, on `device` (default: the vectors' own).

    Returns accuracy (correct / answered, 0.0 if none), correct, total (answered, i.e. known questions),
    oov_questions (skipped), questions (well-formed lines), oov_ratio (oov_questions / questions), and sections:
    a list of {"section", "correct", "total", "accuracy"} in file order (sections without answered questions
    included, accuracy 0.0), ending with gensim's "Total accuracy" entry.

    Shape:
        vectors [V, d] float (numpy or torch), vocab.words V words by id -> dict
    """
    words = _words(vocab)
    _check_vectors(vectors, words)
    names, section_of, questions = _parse_analogies(_read_lines(path, "analogy", encoding), path, case_insensitive)
    if not questions:
        raise DataError(f'no analogy questions in {path}: expected ": section" lines and lines of four words')
    known, keys = _known(words, restrict, case_insensitive)
    in_vocab = [all(w in known for w in q) for q in questions]
    answered = [q for q, ok in zip(questions, in_vocab) if ok]
    sec = np.asarray(section_of, dtype=np.int64)[np.asarray(in_vocab, dtype=bool)]  # (Q,)
    correct = np.zeros(len(answered), dtype=bool)
    if answered:
        dev = device if device is not None else (vectors.device if torch.is_tensor(vectors) else torch.device("cpu"))
        unit = _unit_rows(vectors, restrict).to(dev)  # (R, d)
        rows = unit.shape[0]
        # (R,) the key id of each row: rows that are case variants of one word share it
        group = torch.tensor(list(map(known.__getitem__, keys)), dtype=torch.long, device=dev)
        qids = torch.tensor([[known[w] for w in q] for q in answered], dtype=torch.long, device=dev)  # (Q, 4)
        k = min(_ANALOGY_TOPN, rows)
        step = batch_size or max(1, _BLOCK_ELEMENTS // rows)
        out = []
        for i in range(0, len(answered), step):
            a, b, c, d = qids[i : i + step].unbind(1)  # (q,) each
            scores = (unit[b] + unit[c] - unit[a]) @ unit.t()  # (q, R)
            abc = torch.stack([a, b, c], 1)  # (q, 3)
            scores.scatter_(1, abc, -math.inf)  # gensim drops the question words' own rows
            top = scores.topk(k, dim=1)  # (q, k) best first
            available = top.values > -math.inf  # (q, k); False only where fewer than k rows remain
            g = group[top.indices]  # (q, k) key id of each candidate
            ok = available & (g != a[:, None]) & (g != b[:, None]) & (g != c[:, None])  # (q, k)
            n_avail = available.sum(1)  # (q,)
            # first acceptable candidate; else gensim's loop leaves the last candidate it saw as the answer
            pos = torch.where(ok.any(1), ok.to(torch.int8).argmax(1), (n_avail - 1).clamp_min(0))  # (q,)
            pred = g.gather(1, pos[:, None]).squeeze(1)  # (q,)
            out.append((pred == d) & (n_avail > 0))
        correct = torch.cat(out).cpu().numpy()
    n_sec = len(names)
    sec_correct = np.bincount(sec[correct], minlength=n_sec)
    sec_total = np.bincount(sec, minlength=n_sec)
    sections = [
        {"section": name, "correct": int(sc), "total": int(st), "accuracy": float(sc / st) if st else 0.0}
        for name, sc, st in zip(names, sec_correct, sec_total)
    ]
    n_correct, n_total = int(correct.sum()), len(answered)
    accuracy = n_correct / n_total if n_total else 0.0
    sections.append({"section": "Total accuracy", "correct": n_correct, "total": n_total, "accuracy": accuracy})
    n_oov = len(questions) - n_total
    return {
        "accuracy": accuracy,
        "correct": n_correct,
        "total": n_total,
        "oov_questions": n_oov,
        "questions": len(questions),
        "oov_ratio": n_oov / len(questions),
        "sections": sections,
    }
