"""train_teacher.py: schedule, micro-batching, overfitting, determinism, resume and the golden losses."""
import json
import os

import pytest
import torch

import model as M
import runtime as RT
import train_teacher as TT
import training as TR
from losses import cross_entropy

GOLDEN = os.path.join(os.path.dirname(__file__), "expected_losses.txt")


def losses(out_dir, key="loss"):
    return [r[key] for r in map(json.loads, open(os.path.join(out_dir, "log.jsonl"))) if key in r]


def run(syn, tmp_path, name, **kw):
    _, flags = syn
    cfg = TT.TrainConfig(**{**flags, "preset": "debug", "batch_size": 8, "warmup": 2, "lr": 3e-3,
                            "out_dir": str(tmp_path / name), **kw})
    return TT.train(cfg), cfg


def test_get_lr_warmup_then_cosine_to_zero():
    assert TR.get_lr(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert TR.get_lr(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert TR.get_lr(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert TR.get_lr(55, 1.0, 10, 100) == pytest.approx(0.5)
    assert TR.get_lr(100, 1.0, 10, 100) == pytest.approx(0.0, abs=1e-12)
    assert TR.get_lr(100, 1.0, 10, 100, min_lr=0.1) == pytest.approx(0.1)


def test_optimizer_decays_only_matrices():
    m = M.build_model(M.get_config("debug-gpt2"))
    opt = TR.configure_optimizer(m, 1e-3, 0.1, torch.device("cpu"))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.dim() == 1 for p in plain["params"]) and plain["params"]


def test_micro_batches_equal_one_batch(syn, tmp_path):
    run(syn, tmp_path, "one", micro_batch=8, max_steps=3)
    run(syn, tmp_path, "four", micro_batch=2, max_steps=3)
    a, b = losses(tmp_path / "one"), losses(tmp_path / "four")
    assert len(a) == 3 and a == pytest.approx(b, abs=1e-5)
    # the pre-clip gradient norm: AdamW and clipping hide a gradient's scale, this does not
    assert losses(tmp_path / "four", "grad_norm") == pytest.approx(losses(tmp_path / "one", "grad_norm"), rel=1e-5)
    wa = torch.load(tmp_path / "one" / "ckpt_last.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "four" / "ckpt_last.pt", weights_only=False)["model"]
    for k in wa:  # Adam turns rounding noise in a near-zero gradient into a step of up to lr: 5e-5 after 3 steps
        torch.testing.assert_close(wa[k], wb[k], atol=5e-5, rtol=1e-4)


def test_debug_model_overfits_one_batch():
    torch.manual_seed(0)
    m = M.build_model(M.get_config("debug"))
    opt = TR.configure_optimizer(m, 1e-2, 0.0, torch.device("cpu"))
    x = torch.randint(0, 512, (4, 32))
    for _ in range(200):
        loss = cross_entropy(m(x), TR.next_token_targets(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_same_seed_same_losses_and_validation_falls(syn, tmp_path):
    s1, _ = run(syn, tmp_path, "a", max_steps=5)
    run(syn, tmp_path, "b", max_steps=5)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    cfg = json.load(open(tmp_path / "a" / "config.json"))
    assert cfg["preset"] == "debug" and cfg["max_steps"] == 5
    run(syn, tmp_path, "long", epochs=2, eval_every=20)
    val = losses(tmp_path / "long", "val_loss")
    assert len(val) >= 3 and val[-1] < val[0] - 0.5


def test_resume_matches_uninterrupted_run(syn, tmp_path):
    run(syn, tmp_path, "full", max_steps=6, ckpt_every=100)
    run(syn, tmp_path, "cut", max_steps=6, ckpt_every=100, stop_after=3)
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")[:3]
    run(syn, tmp_path, "cut", max_steps=6, ckpt_every=100, resume=True)
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")  # bitwise on CPU in fp32
    a = torch.load(tmp_path / "cut" / "ckpt_last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "full" / "ckpt_last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_golden_losses(syn, tmp_path):
    """The debug run's first 10 CPU losses (llm.c / torchtitan pattern). Regenerate only on purpose:
    REGEN_GOLDEN=1 python -m pytest tests/test_train.py -k golden, and say why in the commit."""
    run(syn, tmp_path, "golden", max_steps=10)
    got = losses(tmp_path / "golden")
    if os.environ.get("REGEN_GOLDEN"):
        with open(GOLDEN, "w") as f:
            f.write("".join(f"{v:.6f}\n" for v in got))
    want = [float(v) for v in open(GOLDEN)]
    assert got == pytest.approx(want, abs=1e-3)


def test_precision_auto_follows_the_device_and_the_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(RT, "cpu_has_amx", lambda: True)
    assert RT.resolve_precision("auto", cpu, dim=512) == "bf16"
    assert RT.resolve_precision("auto", cpu, dim=128) == "fp32"  # tiny models: bf16 only adds casts
    monkeypatch.setattr(RT, "cpu_has_amx", lambda: False)
    assert RT.resolve_precision("auto", cpu, dim=4096) == "fp32"  # AVX2-only: bf16 is ~100x slower
    assert RT.resolve_precision("fp16", cpu) == "fp16"
    with pytest.raises(ValueError, match="unknown precision"):
        RT.resolve_precision("fp8", cpu)


def test_frozen_teachers_are_stored_in_the_compute_dtype():
    import distill as DS
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        t = DS.teachers_in_compute_dtype([M.build_model(M.get_config("debug"))], precision)[0]
        assert all(p.dtype == dtype for p in t.parameters()) and t.rope_cos.dtype == torch.float32


def test_compile_gives_the_eager_losses(syn, tmp_path):
    """--compile (torch.compile of the model, ~30 s to compile on 2 cores): the same losses as eager."""
    run(syn, tmp_path, "eager", max_steps=2)
    run(syn, tmp_path, "compiled", max_steps=2, compile=True)
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), abs=1e-4)
