"""model.py against independent computations: naive RMSNorm, per-pair RoPE, explicit masked attention,
causality, KV-cache equivalence, save/load, and logit parity with transformers' own models."""
import json
import math
import os

import pytest
import torch

import data as D
import export as X
import model as M
from conftest import CORPUS_DIR, EVAL_DIR


def small(preset, **kw):
    return M.build_model(M.get_config(preset, dropout=0.0, **kw), seed=3).eval()


def perturb_vectors(m):
    """Norm weights and biases start at 1 and 0; randomise them so a mis-mapped one shows up."""
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("name,count", [("baby-llama-58m", 58_343_936), ("llama-360m", 359_973_888),
                                        ("gpt2-705m", 704_928_768)])
def test_paper_parameter_counts(name, count):
    with torch.device("meta"):
        assert M.Transformer(M.PRESETS[name]).num_params() == count


def test_bad_config_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown preset"):
        M.get_config("llama-7b")
    with pytest.raises(ValueError, match="do not divide"):
        M.ModelConfig(dim=100, n_heads=8)


def test_rmsnorm_matches_naive_and_torch():
    x = torch.randn(3, 5, 16)
    norm = M.RMSNorm(16, 1e-6)
    norm.weight.data = torch.randn(16)
    naive = torch.stack([torch.stack([v / math.sqrt(sum(float(e) ** 2 for e in v) / 16 + 1e-6) for v in row])
                         for row in x]) * norm.weight
    torch.testing.assert_close(norm(x), naive, atol=1e-5, rtol=1e-5)
    ref = torch.nn.RMSNorm(16, eps=1e-6)
    ref.weight.data = norm.weight.data
    torch.testing.assert_close(norm(x), ref(x), atol=1e-6, rtol=1e-5)


def test_rope_matches_per_pair_loop():
    D, T, theta = 8, 6, 10000.0
    x = torch.randn(1, 2, T, D, dtype=torch.float64)
    cos, sin = M.precompute_rope(D, T, theta)
    got = M.apply_rope(x, cos.double(), sin.double())
    want = x.clone()
    for t in range(T):
        for i in range(D // 2):  # half-split pairing: (i, i + D/2) rotated by t * theta^(-2i/D)
            a = t * theta ** (-2 * i / D)
            x1, x2 = x[..., t, i], x[..., t, i + D // 2]
            want[..., t, i] = x1 * math.cos(a) - x2 * math.sin(a)
            want[..., t, i + D // 2] = x2 * math.cos(a) + x1 * math.sin(a)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("preset", ["debug", "debug-gpt2"])
def test_attention_matches_explicit_masked_softmax(preset):
    m = small(preset)
    att, cfg = m.layers[0].attention, m.config
    B, T, H, K = 2, 7, cfg.n_heads, cfg.n_kv_heads
    D = cfg.dim // H
    x = torch.randn(B, T, cfg.dim)
    cos, sin = m.rope_cos[:T], m.rope_sin[:T]
    q = att.wq(x).view(B, T, H, D).transpose(1, 2)
    k = att.wk(x).view(B, T, K, D).transpose(1, 2).repeat_interleave(H // K, dim=1)
    v = att.wv(x).view(B, T, K, D).transpose(1, 2).repeat_interleave(H // K, dim=1)
    if cfg.arch == "llama":
        q, k = M.apply_rope(q, cos, sin), M.apply_rope(k, cos, sin)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
    want = att.wo((scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, -1))
    torch.testing.assert_close(att(x, cos, sin), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", ["debug", "debug-gpt2"])
def test_causality(preset):
    m = small(preset)
    x = torch.randint(0, 512, (2, 20))
    y = x.clone()
    y[:, 12:] = torch.randint(0, 512, (2, 8))
    torch.testing.assert_close(m(x)[:, :12], m(y)[:, :12])
    assert not torch.allclose(m(x)[:, 12:], m(y)[:, 12:])


@pytest.mark.parametrize("preset", ["debug", "debug-gpt2"])
def test_kv_cache_generation_equals_full_recomputation(preset):
    m = small(preset)
    prompt = torch.randint(0, 512, (3, 5))
    tokens, (logits,) = M.generate(m, prompt, 9, temperature=0, return_logits=True)
    seq = prompt
    for _ in range(9):  # greedy decoding by recomputing the whole sequence every step
        seq = torch.cat([seq, m(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(tokens, seq)
    torch.testing.assert_close(logits, m(seq)[:, 4:-1], atol=1e-5, rtol=1e-5)
    # a chunked prefill (several tokens at a nonzero cache position) uses the offset causal mask
    cache = m.new_cache(3, 14)
    part = torch.cat([m(seq[:, :6], cache=cache), m(seq[:, 6:], cache=cache)], 1)
    torch.testing.assert_close(part, m(seq), atol=1e-5, rtol=1e-5)
    # the sampler's prefill runs the last layer for the last position only: the same hidden state, and
    # every layer's keys and values cached as a full prefill caches them, at position 0 and after a prefix
    for start in (0, 6):
        full, short = m.new_cache(3, 14), m.new_cache(3, 14)
        if start:
            m.hidden(seq[:, :start], cache=full), m.hidden(seq[:, :start], cache=short)
        h = m.hidden(seq[:, start:12], cache=short, last=True)
        assert h.shape == (3, 1, m.config.dim)
        torch.testing.assert_close(h, m.hidden(seq[:, start:12], cache=full)[:, -1:], atol=1e-5, rtol=1e-5)
        assert short.pos == full.pos == 12
        for a, b in zip(short.k + short.v, full.k + full.v):
            torch.testing.assert_close(a, b)
    torch.testing.assert_close(m.hidden(seq, last=True), m.hidden(seq)[:, -1:], atol=1e-5, rtol=1e-5)


def test_generate_mix_hook_samples_from_the_mixture_and_steps_every_cache():
    a, b = small("debug"), M.build_model(M.get_config("debug"), seed=9).eval()
    prompt = torch.randint(0, 512, (2, 4))
    mix = lambda zs: 0.5 * zs[0] + 0.5 * zs[1]  # noqa: E731
    tokens, (za, zb) = M.generate([a, b], prompt, 6, temperature=0, mix=mix, return_logits=True)
    torch.testing.assert_close(za, a(tokens)[:, 3:-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(zb, b(tokens)[:, 3:-1], atol=1e-5, rtol=1e-5)
    assert torch.equal(tokens[:, 4:], (0.5 * za + 0.5 * zb).argmax(-1))
    g = torch.Generator().manual_seed(1)
    s1 = M.generate(a, prompt, 6, top_k=5, generator=g)
    s2 = M.generate(a, prompt, 6, top_k=5, generator=torch.Generator().manual_seed(1))
    s3 = M.generate(a, prompt, 6, top_k=5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)  # the generator decides the draw


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    keep = expected > 0
    return float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampling_frequencies_match_softmax_of_logits_over_temperature(temperature):
    """20,000 draws of the first new token against softmax(z / T): chi-square with V - 1 = 7 degrees of
    freedom stays below 24.3 (p = 0.001); a greedy or temperature-ignoring sampler fails it."""
    m = M.build_model(M.get_config("debug", vocab_size=8), seed=5).eval()
    prompt = torch.tensor([[3, 1, 4]]).expand(20_000, 3)
    with torch.no_grad():  # logits of standard deviation 1: spread, and the temperature matters
        m.output.weight.mul_(1.0 / m(prompt[:1])[0, -1].std())
    z = m(prompt[:1])[0, -1].detach()
    probs = torch.softmax(z / temperature, -1)
    assert probs.max() < 0.8 and (probs > 0.02).sum() >= 4  # a spread distribution, not a near point mass
    new = M.generate(m, prompt, 1, temperature=temperature, generator=torch.Generator().manual_seed(0))[:, -1]
    assert chi_square(torch.bincount(new, minlength=8).double(), probs.double()) < 24.3
    other = torch.softmax(z / (1.7 - temperature), -1)  # the test can tell temperatures apart
    assert chi_square(torch.bincount(new, minlength=8).double(), other.double()) > 100


def test_top_k_leaves_no_mass_outside_the_k_largest_logits():
    m = M.build_model(M.get_config("debug", vocab_size=8), seed=5).eval()
    prompt = torch.tensor([[3, 1, 4]]).expand(20_000, 3)
    with torch.no_grad():
        m.output.weight.mul_(1.0 / m(prompt[:1])[0, -1].std())
    z = m(prompt[:1])[0, -1].detach()
    top = z.topk(3).indices
    new = M.generate(m, prompt, 1, top_k=3, generator=torch.Generator().manual_seed(0))[:, -1]
    counts = torch.bincount(new, minlength=8).double()
    outside = torch.ones(8, dtype=torch.bool)
    outside[top] = False
    assert counts[outside].sum() == 0
    renormalised = torch.zeros(8, dtype=torch.float64)
    renormalised[top] = torch.softmax(z[top].double(), -1)
    assert chi_square(counts, renormalised) < 13.8  # 2 degrees of freedom, p = 0.001


@pytest.mark.parametrize("preset", ["debug", "debug-gpt2"])
def test_save_load_identical_logits(preset, tmp_path):
    m = perturb_vectors(small(preset))
    M.save_model(m, str(tmp_path / "m.pt"))
    m2, _ = M.load_model(str(tmp_path / "m.pt"))
    x = torch.randint(0, 512, (2, 16))
    assert torch.equal(m(x), m2.eval()(x))


def test_truncated_checkpoint_is_one_clear_error(tmp_path):
    m = small("debug")
    M.save_model(m, str(tmp_path / "m.pt"))
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        M.load_model(str(tmp_path / "t.pt"))


def test_tied_gpt2_embeddings_are_one_tensor():
    m = small("debug-gpt2")
    assert m.output.weight is m.tok_embeddings.weight
    untied = sum(p.numel() for n, p in m.named_parameters(remove_duplicate=False))
    assert m.num_params() == untied - m.output.weight.numel()


@pytest.mark.parametrize("preset", ["debug", "debug-gpt2"])
def test_export_matches_transformers(preset, tmp_path):
    transformers = pytest.importorskip("transformers")
    m = perturb_vectors(small(preset))
    X.export_hf(m, str(tmp_path / "hf"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32).eval()
    assert type(hf).__name__ == {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel"}[m.config.arch]
    x = torch.randint(0, 512, (2, 40))
    with torch.no_grad():
        assert (hf(x).logits - m(x)).abs().max().item() < 1e-4
        want = hf.generate(x[:, :5], max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(M.generate(m, x[:, :5], 6, temperature=0), want)


def test_rope_tables_stay_fp32_after_a_bf16_cast():
    m = M.build_model(M.get_config("debug"), seed=1).to(torch.bfloat16)
    cos, sin = M.precompute_rope(16, 128, 10000.0)
    assert m.rope_cos.dtype == torch.float32 and torch.equal(m.rope_cos, cos) and torch.equal(m.rope_sin, sin)
    assert m.output.weight.dtype == torch.bfloat16  # the weights themselves are cast


def exported(syn, tmp_path):
    """A student with the BabyLM layouts' tokenizer (BPE, byte fallback), trained on the synthetic sentences."""
    _, f = syn
    D.train_tokenizer([os.path.join(f["data_dir"], "train", "synthetic.train")], f["vocab_size"],
                      str(tmp_path / "bpe.model"))
    tok = D.Tokenizer(str(tmp_path / "bpe.model"))
    m = M.build_model(M.get_config("debug", vocab_size=tok.vocab_size), seed=3).eval()
    M.save_model(m, str(tmp_path / "c.pt"), tokenizer_path=tok.path)
    X.main([str(tmp_path / "c.pt"), str(tmp_path / "hf")])
    return tok, m, tmp_path / "hf"


def test_export_cli_writes_a_folder_with_the_tokenizer(syn, tmp_path, capsys):
    tok, _, out = exported(syn, tmp_path)
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "special_tokens_map.json",
                                       "tokenizer.json", "tokenizer.model", "tokenizer_config.json"]
    cfg = json.load(open(out / "config.json"))
    assert cfg["model_type"] == "llama" and cfg["num_hidden_layers"] == 2 and cfg["vocab_size"] == tok.vocab_size
    assert json.load(open(out / "tokenizer_config.json"))["pad_token"] == "<pad>"
    assert "exported" in capsys.readouterr().out


def test_exported_folder_loads_in_transformers_and_tokenizes_as_evaluate_does(syn, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok, m, out = exported(syn, tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(out)  # no sentencepiece, no protobuf: tokenizer.json
    texts = ["The dog runs.", "  is the  cat happy ?  ", "caf\u00e9 na\u00efve \ufb01ne", "a \U0001F600 b", "x"]
    for s in texts:  # evaluate.py scores BOS + encode(" " + s)
        assert hf(" " + s)["input_ids"] == [tok.bos_id] + tok.encode(" " + s), s
        assert hf.decode(hf(" " + s, add_special_tokens=False)["input_ids"]) == tok.decode(tok.encode(" " + s))
    assert hf("The dog.", "A cat.")["input_ids"] == [tok.bos_id] + tok.encode("The dog.") + [tok.eos_id] + \
        tok.encode("A cat.")  # GLUE pairs as evaluate.py builds them
    batch = hf(["The dog runs.", "is the cat happy?"], padding="max_length", max_length=16, truncation=True)
    assert all(len(ids) == 16 for ids in batch["input_ids"]) and hf.pad_token_id == tok.pad_id
    assert batch["input_ids"][0][-1] == tok.pad_id and batch["attention_mask"][0][-1] == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = hf(" The dog runs.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, m(ids), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not (os.path.isdir(os.path.join(CORPUS_DIR, "train_10M")) and
                         os.path.isdir(os.path.join(EVAL_DIR, "blimp_filtered"))), reason="no BabyLM data here")
def test_exported_tokenizer_matches_sentencepiece_on_real_sentences(tmp_path):
    """A tokenizer trained on a slice of the real corpus; 3,000 BLiMP, supplement and EWoK strings, token for
    token (EWoK is read from its zip in memory, never written)."""
    tokenizers = pytest.importorskip("tokenizers")
    import evaluate as E
    files = []
    for name in sorted(os.listdir(os.path.join(CORPUS_DIR, "train_10M"))):
        with open(os.path.join(CORPUS_DIR, "train_10M", name), encoding="utf-8") as f:
            (tmp_path / name).write_text("".join(f.readline() for _ in range(4000)), encoding="utf-8")
        files.append(str(tmp_path / name))
    D.train_tokenizer(files, 4000, str(tmp_path / "tok.model"))
    tok = D.Tokenizer(str(tmp_path / "tok.model"))
    fast = tokenizers.Tokenizer.from_str(json.dumps(D.hf_tokenizer_files(tok.path, 256)["tokenizer.json"]))
    suites = E.load_zero_shot(EVAL_DIR, ["blimp", "supplement", "ewok"])
    texts = []
    for suite, tasks in suites.items():
        for rows in tasks.values():
            for r in rows[::60]:
                texts += ([r["Context1"] + " " + r["Target1"], r["Context1"]] if suite == "ewok"
                          else [" " + r["sentence_good"], " " + r["sentence_bad"]])
    assert len(texts) > 2000
    assert [fast.encode(s, add_special_tokens=False).ids for s in texts] == tok.encode(texts)
