"""distill.py: Table 1 parsing, the step-wise loss against a direct computation, the single-step term,
teacher checks, and a two-step run of all twelve variants."""
import json
import os

import numpy as np
import pytest
import torch

import data as D
from lab import grammar as G
import distill as DS
import model as M
import train_teacher as TT
import training as TR
from losses import cross_entropy, kd_loss

TABLE1 = {  # variant -> (objective, teachers, data, mixing, single step, chunked, progressive)
    "ChooBaCa-fw-2-23": ("fw", 2, "2023", False, False, False, False),
    "ChooBaCa-fw-1-23": ("fw", 1, "2023", False, False, False, False),
    "ChooBaCa-fw-2-24": ("fw", 2, "2024", False, False, False, False),
    "ChooBaCa-fw-1-24": ("fw", 1, "2024", False, False, False, False),
    "ChooBaCa-rv-2-23": ("rv", 2, "2023", True, True, False, False),
    "ChooBaCa-rv-1-23": ("rv", 1, "2023", True, True, False, False),
    "ChooBaCa-rv-2-24": ("rv", 2, "2024", True, True, False, False),
    "ChooBaCa-rv-1-24": ("rv", 1, "2024", True, True, False, False),
    "ChooBaCa-rv-2-23+": ("rv", 2, "2023", True, False, True, True),
    "ChooBaCa-rv-1-23+": ("rv", 1, "2023", True, False, True, True),
    "ChooBaCa-rv-2-24+": ("rv", 2, "2024", True, False, True, True),
    "ChooBaCa-rv-1-24+": ("rv", 1, "2024", True, False, True, True),
}


@pytest.mark.parametrize("name", TABLE1)
def test_parse_all_twelve_variants(name):
    c = DS.resolve_variant(DS.DistillConfig(variant=name))
    assert (c.objective, c.teachers, c.data, c.mixing, c.single_step, c.chunk_size > 0, c.progressive) == TABLE1[name]
    assert c.variant == name and c.out_dir == os.path.join("out", name)
    assert c.chunk_size in (0, 32) and c.teacher_combine == ("kl" if c.objective == "rv" else "logits")
    flags = DS.resolve_variant(DS.DistillConfig(objective=c.objective, teachers=c.teachers, data=c.data,
                                                plus=name.endswith("+")))
    assert flags.variant == name
    short = name[len("ChooBaCa-"):].replace("-23", "").replace("-24", "")  # rv-1+ with the data set's flag
    s = DS.resolve_variant(DS.DistillConfig(variant=short, data=c.data, seed=3))
    assert s.variant == name and s.out_dir == os.path.join("out", name + "-s3")  # a seed but 0: its own folder


def test_bad_variants_and_flag_overrides():
    for bad in ["ChooBaCa-kl-1-24", "ChooBaCa-rv-3-24", "ChooBaCa-fw-1-24+", "choobaca-rv-1-24", "rv-1-25", "rv1"]:
        with pytest.raises(ValueError):
            DS.resolve_variant(DS.DistillConfig(variant=bad))
    c = DS.resolve_variant(DS.DistillConfig(variant="ChooBaCa-rv-1-24+", progressive=False, chunk_size=16))
    assert not c.progressive and c.chunk_size == 16 and c.mixing


def test_lambda_per_variant():
    fw, rv, plus = (DS.resolve_variant(DS.DistillConfig(variant=v))
                    for v in ("ChooBaCa-fw-1-24", "ChooBaCa-rv-1-24", "ChooBaCa-rv-1-24+"))
    assert [DS.lambda_for_epoch(fw, e) for e in range(6)] == [1.0] * 6
    assert [DS.lambda_for_epoch(rv, e) for e in range(6)] == [0.9] * 6
    assert [DS.lambda_for_epoch(plus, e) for e in range(6)] == pytest.approx([0.9, 0.75, 0.6, 0.45, 0.3, 0.3])
    # a full run: the schedule epoch is the real one (10 steps per epoch); a run cut to 12 steps: sixths of it
    assert [DS.schedule_epoch(s, 60, 6) for s in (0, 9, 10, 59)] == [0, 0, 1, 5]
    assert [DS.schedule_epoch(s, 12, 6) for s in range(12)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def models(n_teachers):
    student = M.build_model(M.get_config("debug", vocab_size=64), seed=1)
    teachers = [M.build_model(M.get_config(p, vocab_size=64, dropout=0.0), seed=2 + i).eval()
                for i, p in enumerate(["debug", "debug-gpt2"][:n_teachers])]
    return student, teachers


def grads(m):
    return [p.grad.clone() for p in m.parameters()]


@pytest.mark.parametrize("flags,calls", [(dict(objective="rv", teachers=1, data="2024"), 1),  # rv-1: single step
                                         (dict(variant="rv-1+", data="synthetic"), 2)])  # two chunks of 32
def test_the_default_step_trains_through_losses_reverse_kl(monkeypatch, flags, calls):
    """What trains is what a reader reads: the default step of `distill.py --objective rv --teachers 1 --data
    2024` (ChooBaCa-rv-1-24) and of rv-1+ runs losses.reverse_kl itself (traced by its code object, no fused
    path in between), and the one table it goes through is losses.OBJECTIVES: doubling the reverse KL there
    doubles the KD term and changes the gradient."""
    import sys
    import losses as L
    student, teachers = models(1)
    x = torch.randint(0, 64, (2, 40))
    cfg = DS.resolve_variant(DS.DistillConfig(**flags, precision="fp32", seq_len=40))
    assert not cfg.fused_loss
    ran = []
    tracer = lambda frame, event, arg: ran.append(frame.f_code) if event == "call" else None  # noqa: E731
    sys.setprofile(tracer)
    try:
        _, kd = DS.distill_micro_step(student, teachers, x, cfg, 0.9, lambda loss: loss, torch.Generator().manual_seed(1))
    finally:
        sys.setprofile(None)
    assert ran.count(L.reverse_kl.__code__) == calls
    assert L._FusedKD.forward.__code__ not in ran and L.forward_kl.__code__ not in ran
    plain = grads(student)
    student.zero_grad()
    real = L.OBJECTIVES["rv"]
    monkeypatch.setitem(L.OBJECTIVES, "rv", lambda *a, **kw: 2 * real(*a, **kw))
    _, kd2 = DS.distill_micro_step(student, teachers, x, cfg, 0.9, lambda loss: loss, torch.Generator().manual_seed(1))
    assert float(kd2) == pytest.approx(2 * float(kd), rel=1e-6)
    assert any(not torch.allclose(a, b) for a, b in zip(plain, grads(student)))


@pytest.mark.parametrize("objective,n_teachers,lam,combine,kd_norm,alpha", [
    ("rv", 1, 0.9, "kl", "tokens", 0.5), ("fw", 2, 1.0, "logits", "tokens", 0.2), ("rv", 2, 0.6, "kl", "batch", 0.5),
    ("rv", 2, 0.75, "logits", "tokens", 0.8)])
def test_step_wise_loss_equals_direct_unchunked_loss(objective, n_teachers, lam, combine, kd_norm, alpha):
    student, teachers = models(n_teachers)
    x = torch.randint(0, 64, (3, 32))
    cfg = DS.DistillConfig(objective=objective, alpha=alpha, temperature=2.0, teacher_combine=combine,
                           kd_norm=kd_norm, single_step=False, precision="fp32")
    zs = student(x)
    with torch.no_grad():
        zts = [t(x) for t in teachers]
    norm = 3 if kd_norm == "batch" else None
    ce, kd = cross_entropy(zs, TR.next_token_targets(x)), kd_loss(zs, zts, objective, 2.0, lam, combine, None, norm)
    (alpha * ce + (1 - alpha) * kd).backward()  # eq. 9 with alpha != 0.5: a swapped alpha fails
    want = grads(student)
    for k in (0, 8, 5):  # whole sequence, even chunks, a ragged last chunk
        student.zero_grad()
        cfg.chunk_size = k
        got_ce, got_kd = DS.distill_micro_step(student, teachers, x, cfg, lam, lambda l: l)
        assert float(got_ce) == pytest.approx(ce.item(), abs=1e-5) and float(got_kd) == pytest.approx(kd.item(), abs=1e-5)
        for g, w in zip(grads(student), want):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n_teachers,sample_from", [(1, "mix"), (2, "mix"), (2, "student")])
def test_single_step_term_equals_a_direct_computation(n_teachers, sample_from):
    student, teachers = models(n_teachers)
    x = torch.randint(0, 64, (2, 24))
    P, lam = 10, 0.8
    cfg = DS.DistillConfig(objective="rv", single_step=True, chunk_size=0, prompt_len=P, precision="fp32",
                           teacher_combine="kl", sample_from=sample_from)
    ce, kd = DS.distill_micro_step(student, teachers, x, cfg, lam, lambda l: l, torch.Generator().manual_seed(5))
    got = grads(student)
    student.zero_grad()
    mix = lambda zs: lam * torch.stack(zs[1:]).mean(0) + (1 - lam) * zs[0]  # noqa: E731
    if sample_from == "student":  # on-policy: the student's own distribution
        mix = lambda zs: zs[0]  # noqa: E731
    seq = M.generate([student, *teachers], x[:, :P], 24 - P, mix=mix, generator=torch.Generator().manual_seed(5))
    greedy = M.generate([student, *teachers], x[:, :P], 24 - P, mix=mix, temperature=0)
    assert torch.equal(seq[:, :P], x[:, :P]) and not torch.equal(seq, greedy)  # sampled, not the argmax path
    mask = torch.zeros(2, 24, dtype=torch.bool)
    mask[:, P - 1:-1] = True
    zs = student(seq)
    with torch.no_grad():
        zts = [t(seq) for t in teachers]
    want_kd = kd_loss(zs, zts, "rv", 2.0, lam, "kl", mask)
    want_ce = cross_entropy(student(x), TR.next_token_targets(x))
    (0.5 * want_ce + 0.5 * want_kd).backward()
    assert float(ce) == pytest.approx(want_ce.item(), abs=1e-5) and float(kd) == pytest.approx(want_kd.item(), abs=1e-5)
    for g, w in zip(got, grads(student)):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("sample_from", ["mix", "student"])
def test_single_step_reuses_the_samplers_teacher_logits(sample_from, monkeypatch):
    """The KD term against the teacher logits the sampler computed equals the KD term with the teachers run
    again on the sampled text (the sampler's logits dropped), in value and gradient; --sample-from student
    draws the continuation from the student alone (on-policy)."""
    student, teachers = models(2)
    x = torch.randint(0, 64, (3, 24))
    cfg = DS.DistillConfig(objective="rv", single_step=True, chunk_size=0, prompt_len=10, precision="fp32",
                           teacher_combine="kl", sample_from=sample_from)
    sample = DS.sample_single_step
    out = {}
    for rerun in (False, True):
        if rerun:  # the sampled text without the sampler's logits: the teachers run on it again
            monkeypatch.setattr(DS, "sample_single_step", lambda *a, **kw: (sample(*a, **kw)[0], None))
        ce, kd = DS.distill_micro_step(student, teachers, x, cfg, 0.7, lambda l: l, torch.Generator().manual_seed(3))
        out[rerun] = (float(ce), float(kd), grads(student))
        student.zero_grad()
    monkeypatch.setattr(DS, "sample_single_step", sample)
    assert out[False][:2] == pytest.approx(out[True][:2], rel=1e-5, abs=1e-6)
    for a, b in zip(out[False][2], out[True][2]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    cfg = DS.DistillConfig(objective="rv", single_step=True, chunk_size=0, prompt_len=10, sample_from=sample_from)
    seq, _ = DS.sample_single_step(student, teachers, x, cfg, 0.7, torch.Generator().manual_seed(3))
    own = M.generate(student, x[:, :10], 14, generator=torch.Generator().manual_seed(3))
    assert torch.equal(seq, own) == (sample_from == "student")


def write_layout(root, data, n_lines=400, seed=0):
    """The 2023/2024 folder layouts filled with synthetic sentences (the real files are not here)."""
    rng = np.random.default_rng(seed)
    train_dir, sources, dev_dir = D.LAYOUTS[data]
    for folder, ext, n in ((train_dir, "train", n_lines), (dev_dir, "dev", 60)):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        for s in sources:
            with open(os.path.join(root, folder, f"{s}.{ext}"), "w") as f:
                f.write("\n".join(G.sentences(rng, n)) + "\n")


@pytest.fixture(scope="module")
def twelve(tmp_path_factory):
    root = tmp_path_factory.mktemp("twelve")
    common = dict(work_dir=str(root / "work"), vocab_size=320, seq_len=32, device="cpu", precision="fp32",
                  batch_size=4, max_steps=2, warmup=1, eval_max_seqs=16, log_every=1)
    for data in ("2023", "2024"):
        write_layout(str(root / data), data)
        for preset in ("debug", "debug-gpt2"):
            TT.train(TT.TrainConfig(preset=preset, data=data, data_dir=str(root / data), **common))
    return root, common


@pytest.mark.parametrize("name", TABLE1)
def test_two_step_distillation_of_every_variant(twelve, name):
    root, common = twelve
    data = TABLE1[name][2]
    out = DS.train(DS.DistillConfig(variant=name, preset="debug", teacher1_preset="debug", teacher2_preset="debug-gpt2",
                                    data_dir=str(root / data), prompt_len=16, **common))
    assert out["step"] == 2 and out["variant"] == name
    log = [json.loads(line) for line in open(os.path.join(out["out_dir"], "log.jsonl"))]
    steps = [r for r in log if "kd" in r]
    assert len(steps) == 2 and all(np.isfinite(r["kd"]) and r["kd"] >= 0 for r in steps)
    # step 1's CE is the untrained student's on the first batch, whatever the objective: computed here alone
    corpus = D.prepare(data, str(root / data), 320, common["work_dir"])
    x = next(D.Batches(corpus.train, 32, 4, seed=1).epoch(0))
    student = M.build_model(M.get_config("debug", vocab_size=corpus.tokenizer.vocab_size), seed=0)
    with torch.no_grad():
        want = cross_entropy(student(x), TR.next_token_targets(x)).item()
    assert steps[0]["ce"] == pytest.approx(want, abs=1e-5)
    assert steps[0]["lam"] == (1.0 if "fw" in name else 0.9)
    assert json.load(open(os.path.join(out["out_dir"], "config.json")))["variant"] == name


def test_logged_lambda_follows_eq_3_over_the_schedule_epochs(twelve):
    """A run cut to 12 steps (less than one real epoch) still walks eq. 3's six values, two steps each."""
    root, common = twelve
    out = DS.train(DS.DistillConfig(variant="ChooBaCa-rv-1-24+", preset="debug", teacher1_preset="debug",
                                    data_dir=str(root / "2024"), **dict(common, max_steps=12),
                                    out_dir=str(root / "work" / "lam12")))
    lams = [r["lam"] for r in map(json.loads, open(os.path.join(out["out_dir"], "log.jsonl"))) if "lam" in r]
    assert lams == pytest.approx([0.9, 0.9, 0.75, 0.75, 0.6, 0.6, 0.45, 0.45, 0.3, 0.3, 0.3, 0.3])


def test_teacher_errors_are_one_clear_line(twelve, tmp_path):
    root, common = twelve
    base = dict(common, data="2024", data_dir=str(root / "2024"), preset="debug", teacher1_preset="debug")
    with pytest.raises(ValueError, match="no gpt2-705m teacher.*train_teacher.py --preset gpt2-705m"):
        DS.train(DS.DistillConfig(objective="rv", teachers=2, **base))
    other = os.path.join(common["work_dir"], "teacher-debug-2023", "ckpt_best.pt")  # 2023 tokenizer
    with pytest.raises(ValueError, match="trained with another tokenizer"):
        DS.train(DS.DistillConfig(objective="rv", teachers=1, teacher_ckpt=[other], **base))


@pytest.mark.parametrize("name", ["ChooBaCa-hybrid-1-24+", "ChooBaCa-alternate-1-24", "ChooBaCa-srkl-1-24+",
                                  "ChooBaCa-rvavg-2-24+"])
def test_objectives_beyond_the_paper_run(twelve, name):
    root, common = twelve
    out = DS.train(DS.DistillConfig(variant=name, preset="debug", teacher1_preset="debug", teacher2_preset="debug-gpt2",
                                    data_dir=str(root / "2024"), **common))
    steps = [r for r in map(json.loads, open(os.path.join(out["out_dir"], "log.jsonl"))) if "kd" in r]
    assert out["variant"] == name and len(steps) == 2 and all(np.isfinite(r["kd"]) for r in steps)
    if "alternate" in name:
        assert [r["objective"] for r in steps] == ["fw", "rv"]


def test_diagnostics_of_a_distilled_student_end_to_end(twelve):
    from lab import measures as MS
    root, common = twelve
    out = DS.train(DS.DistillConfig(variant="ChooBaCa-rv-1-24+", preset="debug", teacher1_preset="debug",
                                    data_dir=str(root / "2024"), **common, out_dir=str(root / "work" / "diag")))
    res = MS.diagnose(os.path.join(out["out_dir"], "ckpt_best.pt"), device=torch.device("cpu"))
    d = res["diagnostics"]
    saved = json.load(open(os.path.join(out["out_dir"], "eval", "measures.json")))
    assert saved["diagnostics"] == pytest.approx(d) and saved["teacher"].endswith("teacher-debug-2024/ckpt_best.pt")
    assert 0 < d["entropy"] <= np.log(320) + 1e-6 and d["forward_kl"] >= 0 and d["reverse_kl"] >= 0
    assert 0 <= d["top1_agreement"] <= 1 and 0 < d["distinct_2"] <= 1


def test_bf16_sampler_carries_the_students_current_weights():
    student, teachers = models(1)
    teachers = DS.teachers_in_compute_dtype(teachers, "bf16")
    sampler = M.build_model(student.config).to(torch.bfloat16).eval()
    cfg = DS.DistillConfig(objective="rv", single_step=True, chunk_size=0, prompt_len=8, precision="bf16",
                           teacher_combine="kl")
    x = torch.randint(0, 64, (2, 16))
    ce, kd = DS.distill_micro_step(student, teachers, x, cfg, 0.9, lambda l: l, torch.Generator().manual_seed(0),
                                   sampler)
    for k, v in student.state_dict().items():  # this step's weights, cast once
        assert torch.equal(sampler.state_dict()[k], v.to(torch.bfloat16))
    assert sampler.rope_cos.dtype == torch.float32 and np.isfinite(float(ce)) and float(kd) >= 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())
