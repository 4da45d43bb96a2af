"""Benchmark of the steps that dominate a reproduction: the distillation step (student forward and
backward, teacher forward, the two vocabulary-wide softmaxes, AdamW), the teacher-pretraining step and
zero-shot scoring. One line per configuration of key=value pairs; the achieved model FLOP/s is reported
as a fraction of this machine's matmul peak, measured in the same run and dtype. Tables: lab/BENCHMARK.md.

    python -m lab.bench                                   # paper sizes: baby-llama-58m + llama-360m
    python -m lab.bench --student baby-llama-small --teacher llama-small --batches 8   # quick
    python -m lab.bench --only distill --dtypes bf16 --batches 32 --steps 3 --losses readable,fused
    python -m lab.bench --only distill,peer --objectives fw --chunks 0 --caches off,exact,compact --teachers 1,2
    python -m lab.bench --synthetic                       # the synthetic experiment's step, as run_all.sh runs it
    python -m lab.bench --machine                         # the one-line machine summary the reports print

--synthetic times the default run's own optimizer step (the synthetic tokenizer's 105 words, sequence 64,
batch 32, fp32, an exact teacher cache for teacher-forced cells) for each cell and student size, at 1 and 2
threads, with the readable loss (what trains by default) and the fused one (--fused-loss), and with and
without runtime.keep_freed_memory (which lab/experiment.py calls).

Distillation rows with cache=exact or cache=compact read the teachers' targets from a teacher cache
(teacher_cache.py) built in the same run on a token stream of 4 batches of windows (build_tok_s: its cost),
and each step fetches a random batch of windows from it, disk read included; cache=off runs the teachers.
The peer row is the same fw-1 step (CE + T^2 forward KL, AdamW) on transformers' LlamaForCausalLM, when
transformers is installed.

Each configuration runs in a fresh process, so peak memory is its own: on a GPU the allocator's peak,
on a CPU the resident-set high-water mark (VmHWM) during the timed steps minus the resident set before
them (weights and optimizer state excluded, so the figure is what the step itself needs).
"""
import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

import data as D
import model as M
from cli import guard
from runtime import autocast_ctx, cpu_has_amx, keep_freed_memory
from training import configure_optimizer, next_token_targets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V, T_SEQ = 16000, 128  # vocabulary and sequence length of the rows (--synthetic: 105 and 64)


def matmul_peak(device, dtype, n: int = 0, reps: int = 5) -> float:
    """FLOP/s of a large square matmul: the machine's practical peak for this dtype (a CPU reaches it at 1024,
    183-187 GFLOP/s on the 2-core Zen 4 at 1024, 2048 and 4096; 4096 took 4.7 s of every configuration)."""
    n = n or (4096 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def matmul_gflops(dtype=torch.float32, n: int = 512, seconds: float = 0.2) -> float:
    """This CPU's matmul rate in a fraction of a second: a bf16 probe on a CPU without fast bf16 stays short."""
    a = torch.randn(n, n, dtype=dtype)
    a @ a
    t, reps = time.perf_counter(), 0
    while time.perf_counter() - t < seconds:
        a @ a
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def cpu_kind() -> str:
    """AMX, AVX-512 (no AMX) or AVX2 only: what decides which dtype is fast on this CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return "unknown vector unit"
    return "AMX" if "amx_bf16" in flags else "AVX-512, no AMX" if "avx512f" in flags else \
        "AVX2 only" if "avx2" in flags else "no AVX2"


def machine_summary() -> str:
    """CPU model, cores, AMX or not, fp32/bf16 matmul GFLOP/s, torch version (and the GPU): beside every figure."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{name}, {os.cpu_count()} cores, {cpu_kind()}, matmul fp32 "
            f"{matmul_gflops():.0f} / bf16 {matmul_gflops(torch.bfloat16):.0f} GFLOP/s, torch {torch.__version__}, {gpu}")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def flops_per_token(cfg: M.ModelConfig, T: int, train: bool) -> float:
    """6N (train) or 2N (forward) over the matmul parameters (the head included, embeddings not), plus
    attention's q k^T and att v over a causal T-token context (half of T^2 on average)."""
    c = cfg
    n = c.n_layers * (2 * c.dim * c.dim + 2 * c.dim * c.dim * c.n_kv_heads // c.n_heads
                      + (3 if c.arch == "llama" else 2) * c.dim * c.hidden_dim) + c.dim * c.vocab_size
    attn = c.n_layers * 2 * c.dim * T  # two (T x T/2 x D) products per head per layer, forward, per token
    return (6 if train else 2) * n + (3 if train else 1) * attn


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current resident set
        f.write("5")
    return rss_kib("VmRSS:") * 1024


def peak_bytes(device, base: int) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() - base
    return rss_kib("VmHWM:") * 1024 - base


def hf_model(ours: M.Transformer):
    """transformers' LlamaForCausalLM with our model's config and weights (the peer row)."""
    import transformers
    from export import _hf_llama
    config, weights = _hf_llama(ours)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{k: v for k, v in config.items()
                                                                   if k != "architectures"}))
    hf.load_state_dict(weights, strict=False)
    return hf.to(ours.output.weight.device)


def peer_step(student, teachers, x, precision, alpha=0.5, temperature=2.0):
    """The fw-1 step written the usual way on transformers models: whole (B, T, V) logits, F.kl_div."""
    import torch.nn.functional as F
    with autocast_ctx(x.device, precision):
        z = student(input_ids=x).logits
        with torch.no_grad():
            zt = teachers[0](input_ids=x).logits
    z, zt = z.float(), zt.float()
    ce = F.cross_entropy(z[:, :-1].flatten(0, 1), x[:, 1:].flatten())
    kd = F.kl_div(F.log_softmax(z / temperature, -1).flatten(0, 1), F.log_softmax(zt / temperature, -1).flatten(0, 1),
                  log_target=True, reduction="batchmean") * temperature ** 2
    return alpha * ce + (1 - alpha) * kd


def bench_cache(teachers, form, precision, tokens, T, device):
    """Teacher caches over the token stream's windows, in a temporary folder: (caches, tokens/s of the build)."""
    import tempfile
    import teacher_cache as TC
    n = D.n_windows(len(tokens), T)
    folder, caches, t = tempfile.mkdtemp(prefix="bench-cache-"), [], time.perf_counter()
    for i, teacher in enumerate(teachers):
        spec = TC.Spec(form, precision, f"bench{i}", "bench", "bench", T, n, teacher.config.dim, V, 64 if form ==
                       "compact" else 0, 2.0 if form == "compact" else 0.0)
        TC.build(teacher, spec, os.path.join(folder, str(i)), tokens, device, quiet=True)
        caches.append(TC.TeacherCache(os.path.join(folder, str(i)), spec))
    sync(device)
    return caches, n * T / (time.perf_counter() - t)


def distill_step(student, teachers, cfg, lam: float, tokens, caches, opt, scaler, device, B: int, T: int,
                 clip: bool = False):
    """One optimizer step of distill.py's loop as a closure: a random batch of B windows of the 4B-window token
    stream each call (and the caches' rows for them), eq. 9's micro-step, gradient clipping when `clip`, AdamW."""
    import distill as DS
    g, gen = torch.Generator().manual_seed(0), torch.Generator(device=device).manual_seed(1)

    def step():
        idx = torch.randperm(4 * B, generator=g)[:B]
        x = D.window_rows(tokens, idx, T).to(device)
        cached = [c.fetch(idx, device) for c in caches] if caches else None
        DS.distill_micro_step(student, teachers, x, cfg, lam, scaler.scale, gen, targets_cached=cached)
        if clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    return step


def run_one(args, job: dict) -> dict:
    """One configuration, in this process."""
    import distill as DS
    from losses import cross_entropy
    torch.manual_seed(0)
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    if job.get("malloc", "kept") == "kept":
        keep_freed_memory()  # as lab/experiment.py does
    device = torch.device(job["device"])
    precision = job["dtype"]
    B, T = job["batch"], T_SEQ
    out = dict(job)
    if job["step"] == "variant":
        return run_variant(args, job, out, device)
    if job["step"] == "score":
        import evaluate as E
        student = M.build_model(M.get_config(args.student, vocab_size=V)).to(device)
        rng = np.random.default_rng(0)
        seqs = [[1] + rng.integers(4, V, size=int(rng.integers(6, 16))).tolist() for _ in range(2 * args.pairs)]
        E.sequence_logprobs(student, seqs[:64], [1] * 64, device, precision)
        sync(device)
        t = time.perf_counter()
        E.sequence_logprobs(student, seqs, [1] * len(seqs), device, precision)
        sync(device)
        out["pairs_per_s"] = round(args.pairs / (time.perf_counter() - t), 1)
        return out
    distilling = job["step"] in ("distill", "peer")
    student_cfg = M.get_config(args.student if distilling else args.teacher, vocab_size=V, dropout=0.0)
    teacher_cfgs = [M.get_config(p, vocab_size=V, dropout=0.0)
                    for p in [args.teacher, args.teacher2][:job.get("teachers", 1)]] if distilling else []
    student = M.build_model(student_cfg).to(device)
    teachers = [M.build_model(c).to(device).eval().requires_grad_(False) for c in teacher_cfgs]
    x = torch.randint(4, V, (B, T), device=device)
    if job["step"] == "peer":
        student, teachers = hf_model(student).train(), [hf_model(t).eval().requires_grad_(False) for t in teachers]
    opt = configure_optimizer(student, 1e-4, 0.1, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")  # as the training loops
    if job["step"] == "peer":
        def step():
            scaler.scale(peer_step(student, teachers, x, precision)).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
    elif job["step"] == "distill":
        teachers = DS.teachers_in_compute_dtype(teachers, precision)  # as distill.py's loop does
        cfg = DS.resolve_variant(DS.DistillConfig(objective=job["objective"], single_step=False, mixing=True,
                                                  chunk_size=job["chunk"], precision=precision, teachers=len(teachers),
                                                  fused_loss=job["loss"] == "fused"))
        caches, tokens = None, np.random.default_rng(0).integers(4, V, (4 * B + 1) * T).astype(np.uint16)  # 4B windows
        if job["cache"] != "off":
            caches, rate = bench_cache(teachers, job["cache"], precision, tokens, T, device)
            out["build_tok_s"] = round(rate)
        step = distill_step(student, teachers, cfg, 0.9 if cfg.objective == "rv" else 1.0, tokens, caches, opt, scaler,
                            device, B, T)
    else:
        def step():
            with autocast_ctx(device, precision):
                logits = student(x)
            scaler.scale(cross_entropy(logits, next_token_targets(x))).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
    step()  # warm-up: kernels chosen, optimizer state allocated
    sync(device)
    base = reset_peak(device)
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    dt = (time.perf_counter() - t) / args.steps
    flops = flops_per_token(student_cfg, T, train=True)
    for c in teacher_cfgs:  # a cache leaves the head recompute (exact) or nothing (compact) of each teacher
        cache = job.get("cache", "off")
        flops += flops_per_token(c, T, False) if cache == "off" else 2 * c.dim * V * (cache == "exact")
    peak = matmul_peak(device, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32))
    out.update(tokens_per_s=round(B * T / dt), step_ms=round(1000 * dt), gflop_per_token=float(f"{flops / 1e9:.4g}"),
               tflop_s=round(flops * B * T / dt / 1e12, 3), peak_tflop_s=round(peak / 1e12, 2),
               peak_frac=round(flops * B * T / dt / peak, 3), peak_mem_mib=round(peak_bytes(device, base) / 2 ** 20))
    return out


def run_variant(args, job: dict, out: dict, device) -> dict:
    """One synthetic-size optimizer step of an experiment cell (lab/experiment.py CELLS), as distill.py takes it."""
    import distill as DS
    from lab.experiment import CELLS, SIZES
    B, T = job["batch"], T_SEQ
    cfg = DS.resolve_variant(DS.DistillConfig(**{**CELLS[job["cell"]], "data": "synthetic", "precision": "fp32",
                                                 "seq_len": T, "prompt_len": 3 * T // 4,
                                                 "fused_loss": job["loss"] == "fused"}))
    student_cfg = M.get_config(SIZES[job["size"]], vocab_size=V)
    teacher_cfgs = [M.get_config(p, vocab_size=V, dropout=0.0) for p in [args.teacher, args.teacher2][:cfg.teachers]]
    student = M.build_model(student_cfg).to(device)
    teachers = [M.build_model(c).to(device).eval().requires_grad_(False) for c in teacher_cfgs]
    opt = configure_optimizer(student, 1e-2, 0.0, device)
    tokens = np.random.default_rng(0).integers(4, V, (4 * B + 1) * T).astype(np.uint16)  # 4B windows
    caches = None
    if not cfg.single_step:
        caches, rate = bench_cache(teachers, "exact", "fp32", tokens, T, device)
        out["build_tok_s"] = round(rate)
    out["cache"] = "exact" if caches else "off"
    step = distill_step(student, teachers, cfg, DS.lambda_for_epoch(cfg, 0), tokens, caches, opt,
                        torch.amp.GradScaler(device.type, enabled=False), device, B, T, clip=True)
    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    dt = (time.perf_counter() - t) / args.steps
    # model FLOPs per corpus token: the student's training step; with a single-step term also its trunk on the
    # sampled text and the sampler (student and teachers forward over the sequence); else the teachers' heads
    flops = flops_per_token(student_cfg, T, True)
    if cfg.single_step:
        flops += flops_per_token(student_cfg, T, True) + sum(flops_per_token(c, T, False)
                                                             for c in [student_cfg, *teacher_cfgs])
    else:
        flops += sum(2 * c.dim * V for c in teacher_cfgs)
    peak = matmul_peak(device, torch.float32, n=1024)
    out.update(tokens_per_s=round(B * T / dt), step_ms=round(1000 * dt, 1), mflop_per_token=round(flops / 1e6, 3),
               gflop_s=round(flops * B * T / dt / 1e9, 1), peak_gflop_s=round(peak / 1e9), peak_frac=round(
                   flops * B * T / dt / peak, 3))
    return out


@guard
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", default="baby-llama-58m")
    p.add_argument("--teacher", default="llama-360m")
    p.add_argument("--teacher2", default="gpt2-705m", help="the second teacher of teachers=2 rows")
    p.add_argument("--teachers", default="1", help="teacher counts of the distillation rows, e.g. 1,2")
    p.add_argument("--caches", default="off,exact", help="teacher cache forms of the distillation rows: off, exact, "
                                                         "compact")
    p.add_argument("--batches", default="8,32")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--objectives", default="fw,rv")
    p.add_argument("--chunks", default="0,32")
    p.add_argument("--only", default="distill,peer,teacher,score", help="peer rows need transformers")
    p.add_argument("--steps", type=int, default=None, help="timed steps per row (default 2; --synthetic 20)")
    p.add_argument("--losses", default="readable,fused", help="distillation rows: readable (the default path) or "
                                                               "fused (--fused-loss)")
    p.add_argument("--synthetic", action="store_true", help="the synthetic experiment's step (module doc); other "
                                                            "flags: --sizes, --cells, --threads, --losses, --steps")
    p.add_argument("--sizes", default="d16", help="--synthetic: student sizes (lab/experiment.py SIZES)")
    p.add_argument("--cells", default="fw-1,rv-1+,a-rv,rv-1", help="--synthetic: cells (lab/experiment.py CELLS)")
    p.add_argument("--threads", default="1,2", help="--synthetic: torch threads per row")
    p.add_argument("--malloc", default="kept", help="--synthetic: kept (runtime.keep_freed_memory) or default")
    p.add_argument("--machine", action="store_true", help="print the machine summary and stop")
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--job", default="", help=argparse.SUPPRESS)  # one configuration, in a child process
    args = p.parse_args(argv)
    if args.machine:
        return print(machine_summary())
    global V, T_SEQ
    for preset in [args.student, args.teacher, args.teacher2]:
        M.get_config(preset)  # an unknown preset is one line here, not an error row per configuration
    if args.synthetic:
        from lab.experiment import CELLS, SIZES
        unknown = [x for x in args.sizes.split(",") if x not in SIZES] + [x for x in args.cells.split(",") if x not in CELLS]
        if unknown:
            raise ValueError(f"unknown size or cell {', '.join(unknown)}: see lab/experiment.py SIZES and CELLS")
        V, T_SEQ = 105, 64
        args.teacher, args.teacher2 = "llama-syn", "gpt2-syn"
    args.steps = args.steps or (20 if args.synthetic else 2)
    if args.job:
        print("RESULT " + json.dumps(run_one(args, json.loads(args.job))), flush=True)
        return
    jobs = []
    if args.synthetic:
        jobs = [dict(step="variant", cell=c, size=s, threads=int(n), loss=loss, malloc=m, batch=32, dtype="fp32")
                for s in args.sizes.split(",") for c in args.cells.split(",") for n in args.threads.split(",")
                for m in args.malloc.split(",") for loss in args.losses.split(",")]
        args.dtypes, args.only = "", ""
    for dtype in filter(None, args.dtypes.split(",")):
        if "distill" in args.only:
            jobs += [dict(step="distill", objective=o, dtype=dtype, chunk=int(c), batch=int(b), teachers=int(n),
                          cache=cache, loss=loss) for b in args.batches.split(",") for n in args.teachers.split(",")
                     for o in args.objectives.split(",") for c in args.chunks.split(",")
                     for cache in args.caches.split(",") for loss in args.losses.split(",")]
        if "peer" in args.only and importlib.util.find_spec("transformers"):
            jobs += [dict(step="peer", objective="fw", dtype=dtype, chunk=0, batch=int(b), teachers=1)
                     for b in args.batches.split(",")]
        if "teacher" in args.only:
            jobs.append(dict(step="teacher", dtype=dtype, batch=int(args.batches.split(",")[0])))
        if "score" in args.only:
            jobs.append(dict(step="score", dtype=dtype, batch=0))
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    student = args.sizes if args.synthetic else args.student
    print(f"# {name}, torch {torch.__version__}, student {student}, teachers {args.teacher} (+ {args.teacher2}), "
          f"seq {T_SEQ}, vocab {V}")
    print(f"# {machine_summary()}")
    for job in jobs:
        job["device"] = args.device
        child = [sys.executable, "-m", "lab.bench", "--job", json.dumps(job)] + [
            f"--{k}={v}" for k, v in vars(args).items() if k in ("student", "teacher", "teacher2", "steps", "pairs")]
        child += ["--synthetic"] if args.synthetic else []
        r = subprocess.run(child, capture_output=True, text=True, cwd=ROOT)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"step={job['step']} error={r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
            continue
        res = json.loads(line[7:])
        res.pop("device")
        print(" ".join(f"{k}={v}" for k, v in res.items()), flush=True)


if __name__ == "__main__":
    main()
