"""Benchmark of the steps that dominate a reproduction: the distillation step (student forward and
backward, teacher forward, the two vocabulary-wide softmaxes, AdamW), the teacher-pretraining step and
zero-shot scoring. One line per configuration of key=value pairs; the achieved model FLOP/s is reported
as a fraction of this machine's matmul peak, measured in the same run and dtype.

    python bench.py                                   # paper sizes: baby-llama-58m + llama-360m
    python bench.py --student baby-llama-small --teacher llama-small --batch 8   # quick
    python bench.py --only distill --dtypes bf16 --batches 32 --steps 3

Each configuration runs in a fresh process, so peak memory is its own: on a GPU the allocator's peak,
on a CPU the resident-set high-water mark (VmHWM) during the timed steps minus the resident set before
them (weights and optimizer state excluded, so the figure is what the step itself needs).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch

import model as M
from runtime import cpu_has_amx

V = 16000


def matmul_peak(device, dtype, n: int = 4096, reps: int = 5) -> float:
    """FLOP/s of a large square matmul: the machine's practical peak for this dtype."""
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


def machine_summary() -> str:
    """CPU model, cores, AMX or not, fp32/bf16 matmul GFLOP/s, torch version (and the GPU): beside every figure."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{name}, {os.cpu_count()} cores{', AMX' if cpu_has_amx() else ', no AMX'}, matmul fp32 "
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


def run_one(args, job: dict) -> dict:
    """One configuration, in this process."""
    import distill as DS
    from losses import cross_entropy
    from runtime import autocast_ctx, configure_optimizer, next_token_targets
    torch.manual_seed(0)
    device = torch.device(job["device"])
    precision = job["dtype"]
    B, T = job["batch"], 128
    out = dict(job)
    if job["step"] == "score":
        import numpy as np
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
    student = M.build_model(M.get_config(args.student if job["step"] == "distill" else args.teacher, vocab_size=V,
                                         dropout=0.0)).to(device)
    teachers = [M.build_model(M.get_config(args.teacher, vocab_size=V)).to(device).eval().requires_grad_(False)] \
        if job["step"] == "distill" else []
    opt = configure_optimizer(student, 1e-4, 0.1, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")  # as the training loops
    x = torch.randint(4, V, (B, T), device=device)
    if job["step"] == "distill":
        teachers = DS.teachers_in_compute_dtype(teachers, precision)  # as distill.py's loop does
        cfg = DS.resolve_variant(DS.DistillConfig(objective=job["objective"], single_step=False, mixing=True,
                                                  chunk_size=job["chunk"], precision=precision))

        def step():
            DS.distill_micro_step(student, teachers, x, cfg, 0.9 if cfg.objective == "rv" else 1.0, scaler.scale)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
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
    flops = flops_per_token(student.config, T, train=True) + sum(flops_per_token(m.config, T, False) for m in teachers)
    peak = matmul_peak(device, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32))
    out.update(tokens_per_s=round(B * T / dt), step_ms=round(1000 * dt), gflop_per_token=round(flops / 1e9, 3),
               tflop_s=round(flops * B * T / dt / 1e12, 3), peak_tflop_s=round(peak / 1e12, 2),
               peak_frac=round(flops * B * T / dt / peak, 3), peak_mem_mib=round(peak_bytes(device, base) / 2 ** 20))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", default="baby-llama-58m")
    p.add_argument("--teacher", default="llama-360m")
    p.add_argument("--batches", default="8,32")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--objectives", default="fw,rv")
    p.add_argument("--chunks", default="0,32")
    p.add_argument("--only", default="distill,teacher,score")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--job", default="", help=argparse.SUPPRESS)  # one configuration, in a child process
    args = p.parse_args(argv)
    if args.job:
        print("RESULT " + json.dumps(run_one(args, json.loads(args.job))), flush=True)
        return
    jobs = []
    for dtype in args.dtypes.split(","):
        if "distill" in args.only:
            jobs += [dict(step="distill", objective=o, dtype=dtype, chunk=int(c), batch=int(b)) for b in
                     args.batches.split(",") for o in args.objectives.split(",") for c in args.chunks.split(",")]
        if "teacher" in args.only:
            jobs.append(dict(step="teacher", dtype=dtype, batch=int(args.batches.split(",")[0])))
        if "score" in args.only:
            jobs.append(dict(step="score", dtype=dtype, batch=0))
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(f"# {name}, torch {torch.__version__}, student {args.student}, teacher {args.teacher}, seq 128, vocab {V}")
    for job in jobs:
        job["device"] = args.device
        child = [sys.executable, os.path.abspath(__file__), "--job", json.dumps(job)] + [
            f"--{k}={v}" for k, v in vars(args).items() if k in ("student", "teacher", "steps", "pairs")]
        r = subprocess.run(child, capture_output=True, text=True)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"step={job['step']} error={r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
            continue
        res = json.loads(line[7:])
        res.pop("device")
        print(" ".join(f"{k}={v}" for k, v in res.items()), flush=True)


if __name__ == "__main__":
    main()
