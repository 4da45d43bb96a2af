"""teacher_cache.py: fixed windows, the exact form against running the teachers (losses and gradients), the
compact form against a float64 brute force and its error, refusal of partial and mismatched caches, resuming
a killed build, and distill.py / torchrun with the cache."""
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import data as D
import distill as DS
import model as M
import teacher_cache as TC
import train_teacher as TT
from losses import kd_loss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = torch.device("cpu")


def test_fixed_windows_keep_the_first_epochs_offset_and_the_permutations():
    tokens = np.arange(5_000, dtype=np.uint16)
    moving, fixed = D.Batches(tokens, 16, 8, seed=3), D.Batches(tokens, 16, 8, seed=3, fixed=True)
    first = moving.offset(0)
    assert len({moving.offset(e) for e in range(10)}) > 1 and {fixed.offset(e) for e in range(10)} == {first}
    for e in range(3):
        assert torch.equal(moving.order(e)[1], fixed.order(e)[1])  # the same shuffles, only the offset differs
        assert moving.order(e)[0] == moving.offset(e) and fixed.order(e)[0] == first
        for (idx, rows), (idx_m, rows_m) in zip(fixed.epoch_windows(e), moving.epoch_windows(e)):
            assert torch.equal(rows[:, 0], first + idx * 16)  # window i starts at token first + i T, every epoch
            assert torch.equal(rows, D.window_rows(tokens, idx, 16, first))
            assert torch.equal(rows_m[:, 0], moving.offset(e) + idx_m * 16)
            if e == 0:  # a run of at most one epoch reads the same batches either way
                assert torch.equal(rows, rows_m)
    assert len({D.Batches(tokens, 16, 8, seed=s, fixed=True).offset(0) for s in range(6)}) > 1  # seeds differ
    resolve = lambda **kw: DS.resolve_variant(DS.DistillConfig(variant="ChooBaCa-fw-1-24", **kw)).fixed_windows  # noqa
    assert resolve(teacher_cache="exact") and not resolve() and resolve(fixed_windows=True)
    assert not resolve(teacher_cache="exact", fixed_windows=False)  # random windows: a cache per epoch's offset


def teachers(vocab=64):
    return [M.build_model(M.get_config(p, vocab_size=vocab, dropout=0.0), seed=2 + i).eval().requires_grad_(False)
            for i, p in enumerate(["debug", "debug-gpt2"])]


def built(tmp_path, models, tokens, form, T=16, precision="fp32", k=16, **kw):
    """Caches of `models` over `tokens`, through the same entry point distill.py uses."""
    paths = []
    for i, m in enumerate(models):
        path = str(tmp_path / f"teacher-{i}" / "ckpt_best.pt")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path))
            M.save_model(m, path)
        paths.append(path)
    return TC.open_caches(models, paths, form, precision, "tok", tokens, T, str(tmp_path / "cache"), CPU, k, 2.0, **kw)


@pytest.mark.parametrize("objective,n,lam,combine,chunk,precision", [
    ("fw", 2, 1.0, "logits", 0, "fp32"), ("rv", 2, 0.75, "kl", 8, "fp32"), ("rv", 1, 0.9, "kl", 5, "fp32"),
    ("fw", 2, 1.0, "logits", 8, "bf16")])
def test_exact_cache_gives_the_losses_and_gradients_of_running_the_teachers(tmp_path, objective, n, lam, combine,
                                                                             chunk, precision):
    tokens = np.random.default_rng(0).integers(0, 64, 16 * 40, dtype=np.uint16)
    ts = DS.teachers_in_compute_dtype(teachers()[:n], precision)
    caches = built(tmp_path, ts, tokens, "exact", precision=precision)
    student = M.build_model(M.get_config("debug", vocab_size=64), seed=1)
    cfg = DS.DistillConfig(objective=objective, teacher_combine=combine, single_step=False, chunk_size=chunk,
                           precision=precision, alpha=0.3)
    idx = torch.tensor([7, 0, 38, 12])  # out of order, as a shuffled epoch reads them
    x = D.window_rows(tokens, idx, 16)
    results = []
    for cached in (None, [c.fetch(idx, CPU) for c in caches]):
        student.zero_grad()
        ce, kd = DS.distill_micro_step(student, ts, x, cfg, lam, lambda l: l, targets_cached=cached)
        results.append((float(ce), float(kd), [p.grad.clone() for p in student.parameters()]))
    (ce0, kd0, g0), (ce1, kd1, g1) = results
    assert kd0 > 0 and kd1 == pytest.approx(kd0, rel=1e-5) and ce1 == pytest.approx(ce0, rel=1e-5)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    h = caches[0].fetch(idx, CPU).h
    assert h.dtype == TC.STORE[precision][1] and h.shape == (4, 16, 64)
    with torch.no_grad(), DS.autocast_ctx(CPU, precision):  # the stored rows are the teacher's hidden states
        torch.testing.assert_close(h, ts[0].hidden(x).to(h.dtype), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("objective,lam,chunk", [("fw", 1.0, 0), ("rv", 0.9, 8)])
def test_compact_cache_in_the_step_rebuilds_each_chunk_with_the_students_logits(tmp_path, objective, lam, chunk):
    tokens = np.random.default_rng(3).integers(0, 64, 16 * 40, dtype=np.uint16)
    ts = teachers()
    caches = built(tmp_path, ts, tokens, "compact", k=8)
    student = M.build_model(M.get_config("debug", vocab_size=64), seed=1)
    cfg = DS.DistillConfig(objective=objective, teacher_combine="kl", single_step=False, chunk_size=chunk,
                           precision="fp32", alpha=0.0)
    idx = torch.tensor([3, 30, 9])
    x = D.window_rows(tokens, idx, 16)
    _, kd = DS.distill_micro_step(student, ts, x, cfg, lam, lambda l: l, targets_cached=[c.fetch(idx, CPU) for c in caches])
    with torch.no_grad():  # the whole sequence at once, each teacher's targets rebuilt around the student's logits
        z = student(x)
        targets = [c.fetch(idx, CPU).logits(None, 0, 16, z) for c in caches]
        want = kd_loss(z, targets, objective, 2.0, lam, "kl", fused=False)
    assert float(kd) == pytest.approx(want.item(), rel=1e-4)  # fused, chunked vs reference, whole


def test_compact_form_against_a_float64_brute_force():
    """The top k probabilities of softmax(z / T) and the tail's total mass are kept; the tail is spread evenly."""
    T, k, V = 2.0, 8, 50
    z = torch.randn(3, 5, V, dtype=torch.float64) * 3
    values, ids, rest = TC.topk_targets(z, k, T)
    dense = TC.TopK(values, ids, rest, V, T).logits(None, 1, 4)  # positions 1..3
    p_true = torch.softmax(z[:, 1:4] / T, -1)
    p = torch.softmax(dense.double() / T, -1)
    top = p_true.topk(k, -1).indices
    torch.testing.assert_close(p.gather(-1, top), p_true.gather(-1, top), rtol=2e-3, atol=1e-6)  # fp16 values
    tail = torch.ones_like(p, dtype=torch.bool).scatter_(-1, top, False)
    torch.testing.assert_close((p * tail).sum(-1), (p_true * tail).sum(-1), rtol=2e-3, atol=1e-6)
    p_tail = p[tail].view(3, 3, V - k)
    torch.testing.assert_close(p_tail, p_tail[..., :1].expand_as(p_tail))  # even, without a student
    # with the student's logits: the same top k and tail mass, the tail in the student's shape
    z_s = torch.randn(3, 3, V, dtype=torch.float64) * 2
    p = torch.softmax(TC.TopK(values, ids, rest, V, T).logits(None, 1, 4, z_s).double() / T, -1)
    torch.testing.assert_close(p.gather(-1, top), p_true.gather(-1, top), rtol=2e-3, atol=1e-6)
    q_tail = torch.softmax(z_s / T, -1)[tail].view(3, 3, V - k)
    torch.testing.assert_close(p[tail].view(3, 3, V - k), q_tail / q_tail.sum(-1, keepdim=True)
                               * (p_true * tail).sum(-1, keepdim=True), rtol=2e-3, atol=1e-9)
    # k = V: the distribution itself, and a finite fill so the forward KL's p log p is 0, not NaN
    values, ids, rest = TC.topk_targets(z, V, T)
    assert torch.isinf(rest).all()
    for student in (None, torch.randn(3, 5, V)):
        dense = TC.TopK(values, ids, rest, V, T).logits(None, 0, 5, student)
        p = torch.softmax(dense.double() / T, -1)
        torch.testing.assert_close(p, torch.softmax(z / T, -1), rtol=2e-3, atol=1e-6)
        assert torch.isfinite(dense).all()


def test_compact_error_is_reported_per_objective_and_shrinks_with_k():
    g = torch.Generator().manual_seed(0)
    V = 512  # a peaked teacher (Zipf-like logits) and a student near it, as in training
    z_t = [-1.2 * torch.log1p(torch.randperm(V, generator=g)).float().expand(4, 16, V) + 0.3 * torch.randn(4, 16, V, generator=g)
           for _ in range(2)]
    z_s = z_t[0] + 0.5 * torch.randn(4, 16, V, generator=g)
    errs = {k: TC.compare(z_s, z_t, k) for k in (4, 64, V)}
    assert set(errs[64]) == {"fw", "rv", "rv-mixed"}
    for name in errs[64]:
        assert errs[V][name]["loss_rel_err"] < 1e-3 and errs[V][name]["grad_rel_err"] < 1e-2  # fp16 rounding only
        assert errs[64][name]["loss_rel_err"] < errs[4][name]["loss_rel_err"]
        assert errs[4][name]["loss_rel_err"] > 1e-3  # the measure sees an approximation when there is one


def test_a_killed_build_is_never_read_and_resumes_to_the_same_cache(tmp_path, monkeypatch):
    tokens = np.random.default_rng(1).integers(0, 64, 16 * 700, dtype=np.uint16)  # 699 windows: 3 blocks
    t = teachers()[0]
    (cache,) = built(tmp_path / "whole", [t], tokens, "exact")
    spec = cache.spec
    folder = str(tmp_path / "killed" / "c")
    assert not TC.build(t, spec, folder, tokens, CPU, max_blocks=1, quiet=True)
    assert not os.path.isdir(folder) and os.path.isdir(folder + ".partial")
    with pytest.raises(ValueError, match="not finished or is damaged"):
        TC.TeacherCache(folder, spec)
    calls = []
    hidden = t.hidden
    monkeypatch.setattr(t, "hidden", lambda x: calls.append(len(x)) or hidden(x))
    assert TC.build(t, spec, folder, tokens, CPU, quiet=True)
    assert sum(calls) == 699 - TC.BLOCK  # only the blocks not yet written
    resumed = TC.TeacherCache(folder, spec)
    assert np.array_equal(resumed.arrays["hidden"], cache.arrays["hidden"]) and not os.path.exists(folder + ".partial")
    # a partial left by a build of something else (here: the compact form) is started afresh, not resumed
    other = str(tmp_path / "other")
    assert not TC.build(t, spec, other, tokens, CPU, max_blocks=2, quiet=True)
    compact = TC.Spec(**dict(spec.__dict__, form="compact", k=8, temperature=2.0))
    assert TC.build(t, compact, other, tokens, CPU, quiet=True)
    got = TC.TeacherCache(other, compact).fetch(torch.arange(699), CPU)
    want = TC.topk_targets(t.head(torch.from_numpy(np.array(cache.arrays["hidden"]))), 8, 2.0)
    torch.testing.assert_close(got.values, want[0], rtol=0, atol=0)
    torch.testing.assert_close(got.rest, want[2], rtol=1e-6, atol=1e-6)


def test_mismatched_or_damaged_caches_are_refused_in_one_line(tmp_path, monkeypatch):
    tokens = np.random.default_rng(2).integers(0, 64, 16 * 40, dtype=np.uint16)
    t = teachers()[0]
    (cache,) = built(tmp_path, [t], tokens, "compact", k=8)
    folder = next(str(p) for p in (tmp_path / "cache").iterdir() if p.is_dir())
    other = TC.Spec(**dict(cache.spec.__dict__, teacher_sha="0" * 16))
    with pytest.raises(ValueError, match=r"built for another run: teacher_sha .* delete it"):
        TC.TeacherCache(folder, other)
    assert other.key() != cache.spec.key()  # so a retrained teacher never finds the old folder
    for field in ("dtype", "tokens_sha", "k", "temperature", "seq_len"):
        assert TC.Spec(**dict(cache.spec.__dict__, **{field: 1})).key() != cache.spec.key()
    meta = open(os.path.join(folder, "meta.json")).read()
    with open(os.path.join(folder, "meta.json"), "w") as f:
        f.write(meta[:20])  # cut short
    with pytest.raises(ValueError, match="not finished or is damaged"):
        TC.TeacherCache(folder, cache.spec)
    with open(os.path.join(folder, "meta.json"), "w") as f:
        f.write(meta)
    with open(os.path.join(folder, "rest.bin"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match="rest.bin is missing or damaged"):
        TC.TeacherCache(folder, cache.spec)
    assert cache.spec.bytes_per_token() == 8 * 2 + 8 * 2 + 4
    # a disk too small is refused before anything is written
    monkeypatch.setattr(TC.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 ** 12, 10 ** 12, 1000))
    with pytest.raises(ValueError, match=r"needs 22.5 kB and 1.0 kB are free: free space, move it with --cache-dir"):
        TC.build(t, cache.spec, str(tmp_path / "small"), tokens, CPU, quiet=True)
    assert not os.path.exists(tmp_path / "small.partial")


def cache_flags(syn, **kw):
    _, f = syn
    return dict(f, preset="debug", teacher1_preset="debug", batch_size=8, micro_batch=4, max_steps=3, warmup=1,
                eval_every=None, **kw)


def losses(out_dir, key="kd"):
    return [r[key] for r in map(json.loads, open(os.path.join(out_dir, "log.jsonl"))) if key in r]


def test_distill_with_the_cache_equals_running_the_teacher(syn, tmp_path, capsys):
    f = cache_flags(syn)
    teacher = {k: v for k, v in f.items() if k != "teacher1_preset"}
    TT.train(TT.TrainConfig(**dict(teacher, max_steps=2), out_dir=os.path.join(f["work_dir"], "teacher-debug-synthetic")))
    runs = {}
    for variant in ("ChooBaCa-fw-1-syn", "ChooBaCa-rv-1-syn+"):  # the cached path logs the plain path's numbers
        for cache in ("off", "exact"):
            out = DS.train(DS.DistillConfig(**f, variant=variant, fixed_windows=True, teacher_cache=cache,
                                            cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / (variant + cache))))
            runs[cache] = out["out_dir"]
        for key in ("kd", "ce", "grad_norm"):
            assert losses(runs["exact"], key) == pytest.approx(losses(runs["off"], key), rel=1e-5)
    assert json.load(open(os.path.join(runs["exact"], "config.json")))["teacher_cache"] == "exact"
    # random windows over two epochs: each epoch reads the cache of its own offset, built when it starts
    corpus = D.prepare(f["data"], f["data_dir"], f["vocab_size"], f["work_dir"])
    per_epoch = D.Batches(corpus.train, f["seq_len"], 64, f.get("seed", 0) + 1).steps_per_epoch
    rand = dict(f, batch_size=64, micro_batch=32, max_steps=per_epoch + 2)  # two steps into the second epoch
    for cache in ("off", "exact"):
        runs["random-" + cache] = DS.train(DS.DistillConfig(
            **rand, variant="ChooBaCa-rv-1-syn+", fixed_windows=False, teacher_cache=cache,
            cache_dir=str(tmp_path / "cache-random"), out_dir=str(tmp_path / ("random-" + cache))))["out_dir"]
    for key in ("kd", "ce", "grad_norm"):
        assert losses(runs["random-exact"], key) == pytest.approx(losses(runs["random-off"], key), rel=1e-5)
    cfg = json.load(open(os.path.join(runs["random-exact"], "config.json")))
    batches = D.Batches(D.prepare(cfg["data"], cfg["data_dir"], cfg["vocab_size"], cfg["work_dir"]).train, 32, 64,
                        cfg["seed"] + 1)
    specs = [json.load(open(p / "meta.json"))["spec"] for p in (tmp_path / "cache-random").iterdir() if p.is_dir()]
    epochs = [r["epoch"] for r in map(json.loads, open(os.path.join(runs["random-exact"], "log.jsonl"))) if "kd" in r]
    assert epochs[0] == 0 and epochs[-1] == 1 and batches.offset(0) != batches.offset(1)
    assert sorted(s["offset"] for s in specs) == sorted([batches.offset(0), batches.offset(1)])
    V = str(corpus.tokenizer.vocab_size)
    TC.main(["compare", runs["exact"], "--k", f"8,{V}", "--windows", "4"])  # the compact form's error for this run
    rows = [dict(kv.split("=") for kv in line.split()) for line in capsys.readouterr().out.splitlines()
            if line.startswith("k=")]
    assert [(r["k"], r["objective"]) for r in rows] == [(k, o) for k in ("8", V) for o in ("fw", "rv", "rv-mixed")]
    # k = the whole vocabulary: fp16 rounding of the values only (relative to a loss near 0 after 3 steps from a
    # 2-step teacher: 2-3% here, against about 100% with k = 8)
    err = [float(r["loss_rel_err"]) for r in rows]
    assert max(err[3:]) < 0.1 * min(err[:3]) and rows[3]["bytes_per_token"] == str(4 * int(V) + 4)
    # single step: the KD term is on sampled text, so the teacher runs and no cache is built
    DS.train(DS.DistillConfig(**f, variant="ChooBaCa-rv-1-syn", teacher_cache="exact", prompt_len=16,
                              cache_dir=str(tmp_path / "unused"), out_dir=str(tmp_path / "ss")))
    assert not os.path.exists(tmp_path / "unused")
    # two gloo processes build disjoint blocks of a fresh cache, then train as one process did
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in f.items() if v is not None]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    str(29600 + os.getpid() % 1000), "distill.py", *argv, "--variant=ChooBaCa-rv-1-syn+",
                    "--teacher-cache=exact", f"--cache-dir={tmp_path / 'cache2'}", f"--out-dir={tmp_path / 'two'}"],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    assert losses(tmp_path / "two") == pytest.approx(losses(runs["exact"]), abs=1e-5)
    (a,), (b,) = [[p for p in (tmp_path / c).iterdir() if p.is_dir()] for c in ("cache", "cache2")]
    assert a.name == b.name and np.allclose(np.fromfile(a / "hidden.bin", np.float32),
                                            np.fromfile(b / "hidden.bin", np.float32), atol=1e-6)
