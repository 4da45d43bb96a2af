"""Kill -9 and resume, one clear error line per bad input, NaN/inf guards, and 2-process gloo training."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import data as D
import distill as DS
import evaluate as E
import model as M
import train_teacher as TT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def losses(out_dir, key="loss"):
    return [r[key] for r in map(json.loads, open(os.path.join(out_dir, "log.jsonl"))) if key in r]


def flags(syn, **kw):
    _, f = syn
    f = {**f, "preset": "debug", "batch_size": 8, "warmup": 2, "lr": 3e-3, "deterministic": True, **kw}
    return f


def argv(f: dict) -> list:
    out = []
    for k, v in f.items():
        if v is None:
            continue
        if isinstance(v, bool):
            out += [f"--{k.replace('_', '-')}"] if v else []
        else:
            out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def test_kill_9_mid_run_then_resume_equals_uninterrupted(syn, tmp_path):
    f = flags(syn, max_steps=150, ckpt_every=1, eval_every=50)
    TT.train(TT.TrainConfig(**f, out_dir=str(tmp_path / "full")))
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "train_teacher.py", *argv({**f, "out_dir": str(cut)})], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (cut / "log.jsonl").exists() and sum(1 for _ in open(cut / "log.jsonl")) >= 40:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(cut / "ckpt_last.pt", weights_only=False)["step"]  # readable: saves are atomic
    assert 0 < killed_at < 150
    (cut / "ckpt_last.pt.tmp999").write_bytes(b"half a checkpoint")  # a save interrupted mid-write
    TT.train(TT.TrainConfig(**f, out_dir=str(cut), resume=True))
    assert losses(cut) == losses(tmp_path / "full")  # bitwise on CPU in fp32
    assert losses(cut, "val_loss") == losses(tmp_path / "full", "val_loss")


def test_distill_resume_restores_the_sampler(syn, tmp_path):
    f = flags(syn, max_steps=6, ckpt_every=100)
    TT.train(TT.TrainConfig(**f, out_dir=os.path.join(f["work_dir"], "teacher-debug-synthetic")))
    d = {k: v for k, v in f.items() if k not in ("stop_after",)}
    d.update(objective="rv", teachers=1, teacher1_preset="debug", prompt_len=16)
    DS.train(DS.DistillConfig(**d, out_dir=str(tmp_path / "full")))
    DS.train(DS.DistillConfig(**d, out_dir=str(tmp_path / "cut"), stop_after=3))
    DS.train(DS.DistillConfig(**d, out_dir=str(tmp_path / "cut"), resume=True))
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")


def run_main(fn, args, capsys):
    with pytest.raises(SystemExit) as e:
        fn(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs_each_get_one_clear_line(syn, tmp_path, capsys):
    root, f = syn
    base = ["--data", "synthetic", "--work-dir", f["work_dir"], "--vocab-size", "320", "--seq-len", "32",
            "--device", "cpu", "--max-steps", "2", "--batch-size", "4"]
    # data folder missing / empty / a file empty / not UTF-8
    assert "missing 12 of 12 files" in run_main(TT.main, ["--preset", "debug", "--data", "2024", "--data-dir",
                                                          str(tmp_path / "none")] + base[2:], capsys)
    bad = tmp_path / "bad"
    (bad / "train").mkdir(parents=True)
    (bad / "dev").mkdir()
    assert "missing" in run_main(TT.main, base + ["--preset", "debug", "--data-dir", str(bad)], capsys)
    (bad / "train" / "synthetic.train").write_text("")
    (bad / "dev" / "synthetic.dev").write_text("Hi.\n")
    assert "is empty" in run_main(TT.main, base + ["--preset", "debug", "--data-dir", str(bad)], capsys)
    (bad / "train" / "synthetic.train").write_bytes(b"caf\xe9\n" * 50)
    assert "not UTF-8" in run_main(TT.main, base + ["--preset", "debug", "--data-dir", str(bad)], capsys)
    assert not os.path.exists(os.path.join(f["work_dir"], "teacher-debug-synthetic-bad"))
    # unknown preset and variant
    assert "unknown preset" in run_main(TT.main, base + ["--preset", "llama-7b", "--data-dir", f["data_dir"]], capsys)
    assert "unknown variant" in run_main(DS.main, ["--variant", "ChooBaCa-kl-1-24"], capsys)
    # two teachers with no GPT-2 teacher trained
    err = run_main(DS.main, base + ["--data-dir", f["data_dir"], "--objective", "rv", "--teachers", "2",
                                    "--preset", "debug", "--teacher1-preset", "debug", "--teacher2-preset", "gpt2-small"], capsys)
    assert "no gpt2-small teacher" in err and "train_teacher.py" in err
    # a teacher trained with another tokenizer
    other = M.build_model(M.get_config("debug", vocab_size=320))
    M.save_model(other, str(tmp_path / "t.pt"), tokenizer_sha="0" * 64)
    err = run_main(DS.main, base + ["--data-dir", f["data_dir"], "--objective", "fw", "--preset", "debug",
                                    "--teacher-ckpt", str(tmp_path / "t.pt")], capsys)
    assert "another tokenizer" in err
    # evaluation: a tokenizer whose vocabulary differs from the model's, a folder missing a task, a truncated file
    M.save_model(M.build_model(M.get_config("debug", vocab_size=512)), str(tmp_path / "s.pt"))
    tok = [p for p in os.listdir(os.path.join(f["work_dir"], "data-synthetic")) if p.endswith(".model")][0]
    tok = os.path.join(f["work_dir"], "data-synthetic", tok)
    assert "is not the one" in run_main(E.main, [str(tmp_path / "s.pt"), "--tokenizer", tok, "--eval-dir",
                                                 str(root / "corpus" / "evaluation_data")], capsys)
    M.save_model(M.build_model(M.get_config("debug", vocab_size=D.Tokenizer(tok).vocab_size)), str(tmp_path / "s.pt"),
                 tokenizer_path=tok)
    err = run_main(E.main, [str(tmp_path / "s.pt"), "--eval-dir", str(root / "corpus" / "evaluation_data"),
                            "--tasks", "blimp,supplement"], capsys)
    assert "supplement_filtered" in err
    data = (tmp_path / "s.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    assert "truncated or corrupt" in run_main(E.main, [str(tmp_path / "cut.pt"), "--eval-dir",
                                                       str(root / "corpus" / "evaluation_data")], capsys)


def poison_loss(monkeypatch, at_call: int, factor: float):
    """Multiply the teacher script's loss by `factor` (nan, inf) at its `at_call`-th evaluation."""
    calls, real = {"n": 0}, TT.cross_entropy

    def poisoned(logits, targets, **kw):
        calls["n"] += 1
        out = real(logits, targets, **kw)
        return out * factor if calls["n"] == at_call else out

    monkeypatch.setattr(TT, "cross_entropy", poisoned)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(syn, tmp_path, monkeypatch):
    poison_loss(monkeypatch, 4, float("nan"))  # the 4th training micro-batch: step index 3
    out = tmp_path / "nan"
    with pytest.raises(FloatingPointError, match="at step 3"):
        TT.train(TT.TrainConfig(**flags(syn, max_steps=8, ckpt_every=1, eval_every=None), out_dir=str(out)))
    ckpt = torch.load(out / "ckpt_last.pt", weights_only=False)
    assert ckpt["step"] == 3 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_fp16_inf_steps_are_skipped_and_counted(syn, tmp_path, monkeypatch):
    poison_loss(monkeypatch, 2, float("inf"))
    out = tmp_path / "fp16"
    TT.train(TT.TrainConfig(**flags(syn, max_steps=4, precision="fp16", eval_every=None), out_dir=str(out)))
    log = [r for r in map(json.loads, open(out / "log.jsonl")) if "skipped_steps" in r]
    assert log[-1]["skipped_steps"] == 1 and len(log) == 4


@pytest.mark.parametrize("script", ["train_teacher.py", "distill.py"])
def test_two_gloo_processes_equal_one_process(syn, tmp_path, script):
    f = flags(syn, max_steps=3, eval_every=None, micro_batch=2)
    if script == "distill.py":
        TT.train(TT.TrainConfig(**flags(syn, max_steps=3), out_dir=os.path.join(f["work_dir"], "teacher-debug-synthetic")))
        f.update(objective="rv", teacher1_preset="debug", plus=True, chunk_size=8)
    single = dict(f, out_dir=str(tmp_path / "one"))
    cls, train = (TT.TrainConfig, TT.train) if script == "train_teacher.py" else (DS.DistillConfig, DS.train)
    train(cls(**single))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    str(29500 + os.getpid() % 1000), script, *argv(dict(f, out_dir=str(tmp_path / "two")))],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), abs=1e-5)
    # the averaged gradient: an all-reduce that sums instead of averaging doubles this norm
    assert losses(tmp_path / "two", "grad_norm") == pytest.approx(losses(tmp_path / "one", "grad_norm"), rel=1e-4)
    assert not os.path.exists(tmp_path / "two" / "ckpt_last.pt.tmp")  # rank 0 alone writes checkpoints


def test_every_field_is_validated_before_anything_is_written(syn, tmp_path, capsys):
    _, f = syn
    base = ["--preset", "debug", "--data", "synthetic", "--data-dir", f["data_dir"], "--work-dir", f["work_dir"],
            "--vocab-size", "320", "--device", "cpu", "--max-steps", "2"]
    out = tmp_path / "refused"
    for flags, want in ((["--batch-size", "0"], "--batch-size 0: must be positive"),
                        (["--seq-len", "100000"], "--seq-len 100000: preset debug takes sequences of 2 to 128"),
                        (["--lr", "-1"], "--lr -1.0: must be positive"),
                        (["--precision", "fp8"], "unknown precision 'fp8'"),
                        (["--max-steps", "two"], "--max-steps: invalid int value")):
        err = run_main(TT.main, base + ["--out-dir", str(out)] + flags, capsys)
        assert want in err, err
        assert not out.exists()  # no config.json, no folder: refused before anything was written
    assert "--lam 1.5: must lie in [0, 1]" in run_main(DS.main, base + ["--lam", "1.5", "--out-dir", str(out)], capsys)
    assert not out.exists()


def test_resume_with_another_config_names_the_keys(syn, tmp_path, capsys):
    f = flags(syn, max_steps=2)
    TT.train(TT.TrainConfig(**f, out_dir=str(tmp_path / "run")))
    with pytest.raises(ValueError, match=r"cannot resume .* preset='debug' \(now 'debug-gpt2'\)"):
        TT.train(TT.TrainConfig(**dict(f, preset="debug-gpt2"), out_dir=str(tmp_path / "run"), resume=True))
    TT.train(TT.TrainConfig(**dict(f, max_steps=3), out_dir=str(tmp_path / "ok"), stop_after=2))
    with pytest.raises(ValueError, match="max_steps=3 \\(now 4\\)"):
        TT.train(TT.TrainConfig(**dict(f, max_steps=4), out_dir=str(tmp_path / "ok"), resume=True))


@pytest.mark.parametrize("script", ["train_teacher.py", "distill.py"])
def test_help_documents_every_flag_with_its_default_and_choices(script):
    from dataclasses import fields
    out = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "400"}).stdout
    cls = TT.TrainConfig if script == "train_teacher.py" else DS.DistillConfig
    entries = " ".join(out.split("options:")[1].split()).split(" --")  # one entry per flag, unwrapped
    for fl in fields(cls):
        flag = fl.name.replace('_', '-')
        line = next(e for e in entries if e.startswith((flag + " ", f"no-{flag} ")))  # booleans: --x, --no-x
        assert "(default:" in line, line
        if fl.metadata.get("choices"):
            assert "one of " + ", ".join(map(str, fl.metadata["choices"])) in line, line
    if script == "distill.py":
        assert "fw, rv, hybrid, sfkl, srkl, alternate" in out


def test_rng_streams_restore_per_rank_and_reseed_across_process_counts():
    import training as RT
    torch.manual_seed(5)
    saved = [RT.rng_state(torch.device("cpu")), None]
    want = torch.rand(3)
    saved[1] = dict(saved[0], torch=torch.get_rng_state())  # rank 1's stream: elsewhere
    assert RT.set_rng_state(saved, rank=0, world=2, device=torch.device("cpu"))
    assert torch.equal(torch.rand(3), want)  # rank 0 got its own stream back
    # an 8-process checkpoint resumed by one process: no IndexError, a deterministic reseed
    assert not RT.set_rng_state(saved * 4, rank=0, world=1, seed=123)
    a = torch.rand(3)
    RT.set_rng_state(saved * 4, rank=0, world=1, seed=123)
    assert torch.equal(torch.rand(3), a)
    RT.set_rng_state(saved * 4, rank=1, world=3, seed=123)
    assert not torch.equal(torch.rand(3), a)  # other ranks get other streams
    assert RT.set_rng_state(saved[0], rank=0, world=1)  # an old single-dict checkpoint still restores


def test_sampler_stream_restores_on_its_device_type_and_reseeds_on_another():
    g = torch.Generator().manual_seed(9)
    state = g.get_state()
    want = torch.rand(4, generator=g)
    saved = {"device": "cpu", "states": [state]}
    assert DS.restore_sampler(g, saved, torch.device("cpu"), 0, 1, seed=0, step=10)
    assert torch.equal(torch.rand(4, generator=g), want)
    from_gpu = {"device": "cuda", "states": [torch.zeros(16, dtype=torch.uint8)]}  # a CUDA state: another size
    assert not DS.restore_sampler(g, from_gpu, torch.device("cpu"), 0, 1, seed=0, step=10)
    a = torch.rand(4, generator=g)
    DS.restore_sampler(g, from_gpu, torch.device("cpu"), 0, 1, seed=0, step=10)
    assert torch.equal(torch.rand(4, generator=g), a)
    DS.restore_sampler(g, from_gpu, torch.device("cpu"), 1, 2, seed=0, step=10)
    assert not torch.equal(torch.rand(4, generator=g), a)  # rank 1 does not inherit rank 0's stream


def test_rank_seed_streams_are_distinct_and_rank_0_keeps_its_seed():
    from parallel import SAMPLER_STREAM, rank_seed
    assert rank_seed(5) == 5 and rank_seed(5, stream=SAMPLER_STREAM) == 7  # one process draws as before
    seeds = {rank_seed(5, r, st, step) for r in range(8) for st in (0, SAMPLER_STREAM) for step in (0, 10, 11)}
    assert len(seeds) == 8 * 2 * 3  # within a run, no two (rank, stream, step) share a stream


def test_backend_follows_the_run_device(monkeypatch):
    import parallel as RT
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(RT.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(RT.dist, "init_process_group", lambda backend: calls.append(backend))
    monkeypatch.setattr(RT.torch.cuda, "set_device", lambda d: calls.append(str(d)))
    monkeypatch.setattr(RT.torch.cuda, "is_available", lambda: True)  # a GPU machine
    assert RT.setup_distributed(torch.device("cpu")) == (1, 2) and calls == ["gloo"]  # --device cpu: gloo
    calls.clear()
    RT.setup_distributed(torch.device("cuda", 1))
    assert calls == ["cuda:1", "nccl"]  # pinned to its LOCAL_RANK device before NCCL starts
    monkeypatch.setenv("LOCAL_RANK", "1")
    import runtime
    assert runtime.get_device("cuda") == torch.device("cuda", 1) and runtime.get_device("auto") == torch.device("cuda", 1)


class FakeWork:
    def wait(self):
        pass


@pytest.mark.parametrize("preset", ["debug", "debug-gpt2"])  # gpt2: tied embeddings, one parameter
def test_grad_buckets_all_reduce_during_the_backward_in_order(monkeypatch, preset):
    """A second rank faked: all_reduce sums two identical ranks (x2). Buckets must launch from the hooks,
    before the backward returns, in bucket order, and finish() must leave the single-process average."""
    import losses
    import parallel as RT
    import training
    launched = []
    monkeypatch.setattr(RT.dist, "all_reduce", lambda t, async_op: (launched.append(t.data_ptr()), t.mul_(2),
                                                                    FakeWork())[2])
    m = M.build_model(M.get_config(preset, vocab_size=64, dropout=0.0), seed=1)
    ref = M.build_model(M.get_config(preset, vocab_size=64, dropout=0.0), seed=1)
    x = torch.randint(0, 64, (2, 16))
    red = RT.GradReducer(m, world=2, bucket_mb=0.02)  # ~20 KB buckets: several of them
    assert len(red.flats) > 3
    for micro in range(2):  # two micro-batches; the second is the last
        if micro == 1:
            red.arm()
        losses.cross_entropy(m(x), training.next_token_targets(x)).backward()
    assert launched == [f.data_ptr() for f in red.flats]  # all launched inside backward(), in order
    red.finish()
    for _ in range(2):
        losses.cross_entropy(ref(x), training.next_token_targets(x)).backward()
    for p, q in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    red.zero_grad(None)
    assert all(float(p.grad.abs().sum()) == 0 for p in m.parameters())  # zeroed, still bucket views


def test_grad_buckets_wait_for_every_chunk_of_the_head(monkeypatch):
    import parallel as RT
    launched = []
    monkeypatch.setattr(RT.dist, "all_reduce", lambda t, async_op: (launched.append(t.data_ptr()), FakeWork())[1])
    student = M.build_model(M.get_config("debug", vocab_size=64), seed=1)
    teachers = [M.build_model(M.get_config("debug", vocab_size=64), seed=2).eval()]
    x = torch.randint(0, 64, (2, 32))
    cfg = DS.DistillConfig(objective="rv", chunk_size=8, single_step=False, precision="fp32", teacher_combine="kl")
    red = RT.GradReducer(student, world=2, accumulations={student.output.weight: 4}, bucket_mb=0.02)
    head = red.flats[red.bucket_of[student.output.weight]].data_ptr()
    red.arm()
    DS.distill_micro_step(student, teachers, x, cfg, 0.9, lambda l: l)
    assert launched.count(head) == 1 and len(launched) == len(red.flats)  # after its 4th chunk, not before
    red.finish()
    wrong = RT.GradReducer(student, world=2, accumulations={student.output.weight: 2}, bucket_mb=0.02)
    wrong.arm()
    with pytest.raises(RuntimeError, match="accumulation count"):
        DS.distill_micro_step(student, teachers, x, cfg, 0.9, lambda l: l)
