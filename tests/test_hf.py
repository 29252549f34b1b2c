"""sampledsoftmax.hf on tiny randomly initialised transformers models (nothing downloaded): exact mode is HF's own loss
and gradients, the contracts of labels/shift_labels/-100/num_items_in_batch/logits_to_keep, Trainer with gradient
accumulation, reduction="none", torch.compile, bf16 autocast, PEFT LoRA, sampled training, and clear refusals."""

import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from sampledsoftmax import InputError  # noqa: E402
from sampledsoftmax.hf import FinishWithExact, is_patched, patch, token_counts, unpatch, use_exact  # noqa: E402

V = 257
COMMON = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2)


def _llama(**kw):
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**COMMON, **kw}))


ARCHS = {
    # GPT-2: tied head, conv1d layers, its own dropout (off here so train mode is deterministic)
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=V, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0)),
    "llama-untied": lambda: _llama(tie_word_embeddings=False),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**COMMON)),
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(**COMMON)),
    # Gemma 2: final-logit soft-capping (small cap, so it bites on these logits)
    "gemma2-softcap": lambda: transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
        **COMMON, head_dim=8, final_logit_softcapping=0.5)),
    # Cohere: logits * logit_scale
    "cohere-scale": lambda: transformers.CohereForCausalLM(transformers.CohereConfig(**COMMON, logit_scale=3.0)),
    # Granite: logits / logits_scaling
    "granite-scale": lambda: transformers.GraniteForCausalLM(transformers.GraniteConfig(**COMMON, logits_scaling=0.25)),
}


def _model(arch, seed=0, scale_head=True):
    torch.manual_seed(seed)
    model = ARCHS[arch]().float()
    with torch.no_grad():
        if not scale_head:
            return model  # logits of order 1, not 0.01 as at init: soft-capping and scaling then matter
        model.get_output_embeddings().weight.mul_(30)
    return model


def _batch(seed=1, b=3, t=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(V, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, 8:] = 0  # right padding in row 1
    labels = ids.clone()
    labels[mask == 0] = -100
    labels[2, :4] = -100  # a prompt that is not trained on
    return ids, mask, labels


def _loss_and_grads(model, **inputs):
    model.zero_grad(set_to_none=True)
    out = model(**inputs)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b, atol=1e-5, rtol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=rtol, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("arch", list(ARCHS))
def test_exact_mode_is_hf_loss_and_gradients(arch):
    model = _model(arch)
    ids, mask, labels = _batch()
    ref, ref_g = _loss_and_grads(model, input_ids=ids, attention_mask=mask, labels=labels)
    patch(model, "full")
    out, got_g = _loss_and_grads(model, input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5)
    _assert_same(got_g, ref_g)
    assert out.logits is None  # training returns no logits unless asked
    # return_logits: the model's own logits, over every position
    out2 = model(input_ids=ids, attention_mask=mask, labels=labels, return_logits=True)
    torch.testing.assert_close(out2.logits, ref.logits, atol=1e-5, rtol=1e-5)
    # evaluation of a sampled patch is the exact loss
    patch(model, "sampled", num_sampled=64)
    model.eval()
    with torch.no_grad():
        ev = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        unpatch(model)
        hf = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(ev, hf, atol=1e-5, rtol=1e-5)


def test_transforms_really_apply():
    """Soft-capping and scaling change the loss here: the exact-mode test above would fail with them ignored."""
    for arch in ("gemma2-softcap", "cohere-scale", "granite-scale"):
        model = _model(arch).eval()
        ids, mask, labels = _batch()
        with torch.no_grad():
            ref = model(input_ids=ids, labels=labels).loss
            h = model.get_decoder()(input_ids=ids).last_hidden_state
            plain = torch.nn.functional.cross_entropy(
                (h @ model.get_output_embeddings().weight.T)[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1))
        assert abs(float(ref) - float(plain)) > 0.05, arch


def test_shift_labels_taken_as_given_never_shifted_twice():
    model = _model("llama-untied")
    ids, mask, labels = _batch()
    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:].contiguous()  # HF's loss .view()s it
    ref = model(input_ids=ids, attention_mask=mask, labels=labels, shift_labels=shifted).loss
    patch(model, "full")
    a = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    b = model(input_ids=ids, attention_mask=mask, labels=labels, shift_labels=shifted).loss
    torch.testing.assert_close(a, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b, ref, atol=1e-5, rtol=1e-5)
    # given labels as shift_labels, they are used as they are: a different loss, not shifted a second time
    c = model(input_ids=ids, attention_mask=mask, labels=labels, shift_labels=labels).loss
    assert abs(float(c) - float(ref)) > 1e-3


def test_num_items_in_batch_divides_the_sum_and_moves_to_the_device():
    model = _model("qwen2")
    ids, mask, labels = _batch()
    n = torch.tensor(50)
    ref, ref_g = _loss_and_grads(model, input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=n)
    patch(model, "full")
    out, got_g = _loss_and_grads(model, input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=n)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5)
    _assert_same(got_g, ref_g)
    # not the mean: the count of valid targets here is not 50
    valid = int((labels[:, 1:] != -100).sum())
    assert valid != 50
    torch.testing.assert_close(out.loss * 50 / valid, model(input_ids=ids, attention_mask=mask, labels=labels).loss,
                               atol=1e-5, rtol=1e-5)


def test_logits_to_keep_with_labels_of_the_kept_positions():
    model = _model("mistral")
    ids, mask, labels = _batch()
    ref = model(input_ids=ids, labels=labels[:, -5:], logits_to_keep=5).loss
    patch(model, "full")
    torch.testing.assert_close(model(input_ids=ids, labels=labels[:, -5:], logits_to_keep=5).loss, ref,
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="logits_to_keep"):
        model(input_ids=ids, labels=labels, logits_to_keep=5)


def test_reduction_none_gradients_under_a_non_uniform_upstream_gradient():
    model = _model("llama-untied")
    ids, mask, labels = _batch()
    up = torch.rand(labels.shape, generator=torch.Generator().manual_seed(3)) + 0.5
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=mask).logits
    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    per = torch.nn.functional.cross_entropy(logits.transpose(1, 2), shifted, reduction="none")  # 0 where ignored
    (per * up).sum().backward()
    ref_g = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    patch(model, "full", reduction="none")
    model.zero_grad()
    got = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert got.shape == labels.shape
    torch.testing.assert_close(got, per, atol=1e-5, rtol=1e-5)
    (got * up).sum().backward()
    _assert_same({n: p.grad for n, p in model.named_parameters() if p.grad is not None}, ref_g, atol=5e-5)


def test_return_dict_false_gives_hf_tuple_order():
    model = _model("llama-untied")
    ids, _, labels = _batch()
    patch(model, "full")
    out = model(input_ids=ids, labels=labels, return_dict=False)
    assert isinstance(out, tuple) and out[0].dim() == 0


def _lm_data(n=48, t=16, seed=0):
    """A learnable text: each row is an arithmetic progression of token ids mod V (next token = this one + step)."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(V, (n, 1), generator=g)
    step = torch.randint(1, 4, (n, 1), generator=g)
    return (start + step * torch.arange(t)) % V


# (NCE is left out here: on a head without a bias it must learn the normaliser through h first, and 60 steps of this
# tiny model raise its exact loss before they lower it; the LM sweep measures NCE where it has the time)
@pytest.mark.parametrize("loss,opts", [("sampled", dict(num_sampled=32)), ("inbatch", {}),
                                       ("sampled", dict(num_sampled=32, sampler="unigram"))])
def test_sampled_mode_trains_and_the_exact_heldout_loss_falls(loss, opts):
    model = _model("llama-untied", scale_head=False)
    data, held = _lm_data(), _lm_data(16, seed=9)
    if opts.get("sampler") == "unigram":
        opts = dict(opts, counts=token_counts(data, V))
    patch(model, loss, **opts)
    model.eval()
    with torch.no_grad():
        before = float(model(input_ids=held, labels=held).loss)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(60):
        batch = data[(step * 8) % 48:(step * 8) % 48 + 8]
        out = model(input_ids=batch, labels=batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = float(model(input_ids=held, labels=held).loss)
    assert math.isclose(before, math.log(V), rel_tol=0.1)  # random start: about uniform
    assert after < before - 1.0, (before, after)


def _trainer(model, rows, tmp_path, batch, accum, callbacks=(), steps=1):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
        max_steps=steps, learning_rate=1.0, optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0,
        weight_decay=0.0, use_cpu=True, report_to=[], save_strategy="no", logging_steps=1, seed=0,
        dataloader_drop_last=True, disable_tqdm=True)
    return transformers.Trainer(model=model, args=args, train_dataset=rows, callbacks=list(callbacks))


def test_trainer_gradient_accumulation_equals_one_large_batch(tmp_path):
    ids, mask, labels = _batch(b=4, t=12)
    labels[0, 2:] = -100  # very different counts of targets per row: a mean per micro-batch would be wrong
    rows = [dict(input_ids=ids[i], attention_mask=mask[i], labels=labels[i]) for i in range(4)]

    def delta(patched, batch, accum):
        model = _model("llama-untied")
        if patched:
            patch(model, "full")
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainer = _trainer(model, rows, tmp_path, batch, accum)
        result = trainer.train()
        return result.training_loss, {n: before[n] - p.detach() for n, p in model.named_parameters()}

    ref_loss, ref = delta(False, 4, 1)  # HF's own loss, one batch of 4: the step is lr · gradient
    loss_a, acc = delta(True, 2, 2)
    loss_b, big = delta(True, 4, 1)
    _assert_same(acc, ref)
    _assert_same(big, ref)
    assert math.isclose(loss_a, ref_loss, rel_tol=1e-5) and math.isclose(loss_b, ref_loss, rel_tol=1e-5)


def test_trainer_evaluate_reports_the_exact_loss_of_a_sampled_patch(tmp_path):
    model = _model("llama-untied")
    rows = [dict(input_ids=r, labels=r) for r in _lm_data(12)]
    ref = _trainer(model, rows, tmp_path, 4, 1).evaluate(rows)["eval_loss"]
    patch(model, "sampled", num_sampled=16)
    got = _trainer(model, rows, tmp_path, 4, 1).evaluate(rows)["eval_loss"]
    assert math.isclose(got, ref, rel_tol=1e-5)


def test_finish_with_exact_switches_for_the_last_fraction(tmp_path):
    model = patch(_model("llama-untied"), "sampled", num_sampled=16)
    seen = []

    class Record(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kw):
            seen.append(model.__dict__["_sampledsoftmax_patch"].exact_only)

    rows = [dict(input_ids=r, labels=r) for r in _lm_data(20)]
    _trainer(model, rows, tmp_path, 2, 1, callbacks=[FinishWithExact(0.2), Record()], steps=10).train()
    assert seen == [False] * 8 + [True] * 2


def test_torch_compile_gives_the_eager_loss_with_ignored_labels():
    model = _model("llama-untied")
    ids, mask, labels = _batch()
    patch(model, "full")
    eager = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    compiled = torch.compile(model, backend="aot_eager")
    got = compiled(input_ids=ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(got, eager, atol=1e-5, rtol=1e-5)
    got.backward()
    assert model.get_output_embeddings().weight.grad is not None


@pytest.mark.slow  # inductor compiles C++ on the CPU: 70 s here
def test_torch_compile_inductor_gives_the_eager_loss():
    model = _model("llama-untied")
    ids, mask, labels = _batch()
    patch(model, "full")
    eager = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    got = torch.compile(model)(input_ids=ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(got, eager, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_bf16_autocast_is_finite_and_close(loss):
    model = _model("llama-untied")
    ids, mask, labels = _batch()
    patch(model, loss, num_sampled=64) if loss != "full" else patch(model, "full")
    torch.manual_seed(0)
    ref = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(0)
        out = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert out.dtype == torch.float32 and torch.isfinite(out)
    out.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert abs(float(out.detach()) - float(ref.detach())) < 0.05 * float(ref.detach())


def test_peft_lora_on_the_decoder_with_the_patched_head():
    peft = pytest.importorskip("peft")
    model = _model("llama-untied")
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    ids, mask, labels = _batch()
    lora.eval()
    with torch.no_grad():
        ref = lora(input_ids=ids, attention_mask=mask, labels=labels).loss
    patch(lora, "sampled", num_sampled=32)
    with torch.no_grad():
        torch.testing.assert_close(lora(input_ids=ids, attention_mask=mask, labels=labels).loss, ref,
                                   atol=1e-5, rtol=1e-5)  # evaluation: exact
    lora.train()
    out = lora(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    trained = [n for n, p in lora.named_parameters() if p.grad is not None]
    assert trained and all("lora_" in n for n in trained)  # the base model (head included) stays frozen


def test_no_n_by_v_tensor_in_a_training_step():
    """The largest tensor alive in forward + backward, for every loss, stays far below N×V (N = B·T targets)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for x in out if isinstance(out, (tuple, list)) else [out]:
                if torch.is_tensor(x):
                    self.numel = max(self.numel, x.numel())
            return out

    big_v = 4096
    ids = torch.randint(big_v, (8, 32))
    n = ids.numel()
    for loss, opts in [("full", dict(memory_budget_mb=0.25)), ("sampled", dict(num_sampled=64)),
                       ("nce", dict(num_sampled=64)), ("negative", dict(num_sampled=8)), ("inbatch", {})]:
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**COMMON, "vocab_size": big_v}))
        patch(model, loss, **opts)
        with Largest() as mode:
            model(input_ids=ids, labels=ids).loss.backward()
        assert mode.numel < n * big_v / 4, (loss, mode.numel, n * big_v)  # the largest: V×d (d = N/8 here)
    unpatched = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**COMMON, "vocab_size": big_v}))
    with Largest() as mode:
        unpatched(input_ids=ids, labels=ids).loss.backward()
    assert mode.numel >= n * big_v  # the check sees HF's own N×V logits


def test_token_counts_from_lists_tensors_and_dict_rows():
    rows = [dict(input_ids=[1, 2, 2]), dict(input_ids=torch.tensor([2, 5]))]
    torch.testing.assert_close(token_counts(rows, 6), torch.tensor([0, 1, 3, 0, 0, 1]))
    torch.testing.assert_close(token_counts(torch.tensor([[0, -100], [3, 3]]), 4), torch.tensor([1, 0, 0, 2]))
    with pytest.raises(InputError, match="vocab_size"):
        token_counts([[7]], 4)


def test_unpatch_restores_the_model():
    model = _model("llama-untied")
    ids, _, labels = _batch()
    keys = set(model.state_dict())
    patch(model, "sampled", num_sampled=16)
    assert is_patched(model) and set(model.state_dict()) == keys  # no new keys in checkpoints
    unpatch(model)
    assert not is_patched(model) and "forward" not in model.__dict__
    assert not model.get_output_embeddings()._forward_pre_hooks
    assert model(input_ids=ids, labels=labels).logits.shape == (*ids.shape, V)


def test_unsupported_models_and_options_are_refused_clearly():
    model = _model("llama-untied")
    with pytest.raises(InputError, match="adaptive"):
        patch(model, "adaptive")
    with pytest.raises(InputError, match="sparse"):
        patch(model, "sampled", sparse=True)
    # a config that declares a transform this model's forward does not apply: the probe catches the mismatch
    bad = _model("llama-untied")
    bad.config.logit_scale = 2.0
    with pytest.raises(InputError, match="differ"):
        patch(bad, "full")
    assert not is_patched(bad)

    class Doubled(transformers.LlamaForCausalLM):  # a forward that transforms the logits in a way nobody declares
        def forward(self, *a, **kw):
            out = super().forward(*a, **kw)
            out.logits = out.logits * 2
            return out

    with pytest.raises(InputError, match="differ"):
        patch(Doubled(transformers.LlamaConfig(**COMMON)), "full")
    nonlinear = _model("llama-untied")
    nonlinear.set_output_embeddings(torch.nn.Sequential(torch.nn.Linear(32, V)))
    with pytest.raises(InputError, match="not a plain"):
        patch(nonlinear, "full")
    with pytest.raises(InputError, match="not patched"):
        use_exact(_model("llama-untied"))
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(vocab_size=V, d_model=16, d_ff=32, num_layers=1,
                                                                        num_heads=2, d_kv=8))
    with pytest.raises(InputError, match="encoder-decoder"):
        patch(t5, "full")
    mlm = transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=V, hidden_size=16, num_hidden_layers=1,
                                                               num_attention_heads=2, intermediate_size=32))
    with pytest.raises(InputError, match="causal"):
        patch(mlm, "full")


def test_example_trains_a_tiny_llama_with_trainer_and_reports_exact_bits_per_byte(tmp_path):
    import random
    import subprocess
    import sys
    from pathlib import Path

    rng = random.Random(0)
    words = "the of and a to in is that it was for on are as with his they at be this from have or by".split()
    text = "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) for _ in range(3000))
    (tmp_path / "c.txt").write_text(text)
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "examples/hf_causal_lm.py"), "--corpus", str(tmp_path / "c.txt"),
           "--vocab-size", "300", "--steps", "20", "--batch", "8", "--seq", "32", "--dim", "32",
           "--num-sampled", "64", "--heldout-fraction", "0.02", "--out", str(tmp_path / "run")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert "bits per byte" in last and "unigram" in last
    bad = subprocess.run(cmd[:2] + ["--corpus", str(tmp_path / "missing.txt")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "make_corpus" in bad.stderr


def test_bench_hf_runs_every_cpu_row_and_prints_the_table(tmp_path, capsys):
    import dataclasses
    import json

    from sampledsoftmax.cli import build_parser, main
    from sampledsoftmax.experiments.bench_hf import HFBenchConfig

    js = tmp_path / "hf.json"
    rc = main(["bench-hf", "--sizes", "300", "--rows", "hf,exact,sampled", "--dim", "16", "--seq", "16", "--batch",
               "2", "--num-sampled", "32", "--repeats", "1", "--device", "cpu", "--json", str(js)])
    assert rc == 0
    rows = json.loads(js.read_text())["rows"]
    assert [r["row"] for r in rows] == ["hf", "exact", "sampled"]
    assert all(r["median_ms"] > 0 and r["peak_extra_mb"] >= 0 and math.isfinite(r["last_loss"]) for r in rows)
    assert "| 300 | exact |" in capsys.readouterr().out
    assert main(["bench-hf", "--rows", "hf,bogus", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bogus" in err[0]
    # the parser's defaults are the config's (the parser repeats them so that --help imports no torch)
    args = build_parser().parse_args(["bench-hf"])
    for f in dataclasses.fields(HFBenchConfig):
        if f.name not in ("rows", "device", "seed", "heads"):
            assert getattr(args, f.name) == f.default, f.name
