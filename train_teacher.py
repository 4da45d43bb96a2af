"""Pretrain the teachers (SPEC.md section 3): LLaMA-360M and GPT-2-705M on BabyLM strict-small, plain
next-token cross-entropy. Also home of the helpers distill.py shares (seed, device, precision, schedule,
optimizer, checkpoints, validation, distributed set-up).

    python train_teacher.py --preset debug --data synthetic --max-steps 50               # CPU smoke run
    BABYLM_DIR=../shared/data/corpus python train_teacher.py --preset llama-small --max-steps 300
    python train_teacher.py --preset llama-360m --data 2024                               # paper, GPU
    torchrun --nproc_per_node 8 train_teacher.py --preset gpt2-705m --data 2024           # multi-GPU

Shape legend: B batch (sequences), T time, V vocab.
"""
import argparse
import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, fields
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import data as D
import model as M
from losses import cross_entropy

TEACHER_LR = {"llama": 3e-4, "gpt2": 2.5e-4}  # SPEC section 3, by architecture


@dataclass
class TrainConfig:
    preset: str = "llama-360m"
    data: str = "2024"                 # 2024 | 2023 | synthetic
    data_dir: str = ""                 # default: $BABYLM_DIR (2024), $BABYLM_2023_DIR (2023), else data/babylm_<data>
    work_dir: str = "out"              # tokenizer, token caches and every run folder
    out_dir: str = ""                  # default: <work_dir>/teacher-<preset>-<data>
    vocab_size: int = 16000
    separator: str = "none"            # none | bos | eos at each line start/end
    epochs: int = 4
    max_steps: int = 0                 # cap on optimizer steps (0: the epochs decide)
    stop_after: int = 0                # stop (with a checkpoint) after this many steps; the schedule is unchanged
    batch_size: int = 128              # sequences per optimizer step, all processes together
    micro_batch: int = 0               # sequences per forward pass (0: the whole batch on a GPU, 16 on a CPU)
    seq_len: int = 128
    lr: float = 0.0                    # 0: SPEC's value for the architecture
    warmup: int = 300
    min_lr: float = 0.0                # cosine decays to this ("cosine to 0")
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    dropout: float = -1.0              # -1: the preset's (0.1 for GPT-2, 0 for LLaMA)
    eval_every: int = 0                # steps between validations (0: once per epoch and at the end)
    eval_max_seqs: int = 8192
    ckpt_every: int = 100              # steps between ckpt_last.pt writes
    log_every: int = 10
    seed: int = 0
    device: str = "auto"               # auto | cuda | mps | cpu
    precision: str = "auto"            # auto | fp32 | bf16 | fp16
    compile: bool = False
    deterministic: bool = False
    resume: bool = False


# ---------------------------------------------------------------------------------------------------------
# shared helpers (distill.py imports these)


def parse_config(cls, argv=None, doc: str = ""):
    """argparse generated from the dataclass fields; --config run.json supplies defaults; unknown flags and
    unknown JSON keys are errors."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="JSON file with any of the fields below")
    for f in fields(cls):
        name = "--" + f.name.replace("_", "-")
        if f.type in (bool, Optional[bool]):
            p.add_argument(name, action=argparse.BooleanOptionalAction, default=None)
        elif f.type is list:
            p.add_argument(name, action="append", default=None, help="repeatable")
        else:
            p.add_argument(name, type=f.type, default=None, help=f"default {f.default!r}")
    args = vars(p.parse_args(argv))
    values, config_path = {}, args.pop("config")
    if config_path:
        with open(config_path) as fh:
            values = json.load(fh)
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            p.error(f"{config_path}: unknown keys {sorted(unknown)}")
    values.update({k: v for k, v in args.items() if v is not None})
    return cls(**values)


def set_seed(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def set_determinism():
    """torchtitan's set_determinism: deterministic kernels, no cudnn autotune, a fixed cuBLAS workspace."""
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False


def get_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_ctx(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def resolve_precision(precision: str, device: torch.device, model=None, tokens=None) -> str:
    """auto: bf16 on a GPU that has it, fp16 on other GPUs; on a CPU whichever of fp32 and bf16 runs a
    forward+backward of this model on this micro-batch faster (measured here, twice each)."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {precision!r}: use auto, fp32, bf16 or fp16")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type != "cpu" or model is None:
        return "fp32"
    times = {}
    for p in ("fp32", "bf16"):
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            with autocast_ctx(device, p):
                loss = model(tokens).float().mean()
            loss.backward()
            best = min(best, time.perf_counter() - t0)
        times[p] = best
    model.zero_grad(set_to_none=True)
    return min(times, key=times.get)


def get_lr(step: int, lr: float, warmup: int, total: int, min_lr: float = 0.0) -> float:
    """Linear warmup over `warmup` steps (step 0 gets lr/warmup), then cosine from lr to min_lr at `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def configure_optimizer(model, lr: float, weight_decay: float, device: torch.device):
    """AdamW (0.9, 0.999, eps 1e-8); weight decay only on matrices (>= 2 dims), never norms or biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # the fused kernel: on a 2-core CPU one AdamW step over 58M parameters takes 0.08 s instead of 0.6 s
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=device.type in ("cpu", "cuda"))


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s: dict):
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save_checkpoint(path: str, model, optimizer, scaler, step: int, cfg, best_val: float, tok, **extra):
    """One dict, written atomically: weights of the raw module (never a compiled or DDP wrapper),
    optimizer, scaler, step, config, RNG states, best validation loss and the tokenizer's identity."""
    raw = getattr(model, "_orig_mod", model)
    raw = getattr(raw, "module", raw)
    M.atomic_save({"model": raw.state_dict(), "model_config": asdict(raw.config), "optimizer": optimizer.state_dict(),
                   "scaler": scaler.state_dict(), "step": step, "config": asdict(cfg), "rng": rng_state(),
                   "best_val": best_val, "tokenizer_sha": tok.sha, "tokenizer_path": os.path.abspath(tok.path),
                   "vocab_size": tok.vocab_size, **extra}, path)


def load_checkpoint(path: str, model, optimizer, scaler) -> dict:
    ckpt = M.read_checkpoint(path)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return ckpt


@torch.no_grad()
def estimate_val_loss(model, val: torch.Tensor, micro_batch: int, device, precision: str) -> float:
    """Mean next-token cross-entropy over every token of the fixed validation subset."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(val), micro_batch):
        x = val[i:i + micro_batch].to(device)
        y = next_token_targets(x)
        with autocast_ctx(device, precision):
            logits = model(x)
        n = int((y != -100).sum())
        total += cross_entropy(logits, y).item() * n
        count += n
    model.train(was_training)
    return total / count


def next_token_targets(x: torch.Tensor) -> torch.Tensor:
    """(B, T) targets: token t+1 at position t, ignore_index at the last position (as HF's labels=inputs)."""
    y = torch.full_like(x, -100)
    y[:, :-1] = x[:, 1:]
    return y


def setup_distributed():
    """(rank, world) from torchrun's environment; gloo on a CPU, nccl on GPUs. (0, 1) when not launched so."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", 0)), world


def broadcast_params(model, world: int):
    """Every process starts from rank 0's weights."""
    if world > 1:
        for t in model.state_dict().values():
            dist.broadcast(t, 0)


def all_reduce_grads(model, world: int):
    """Average gradients over processes: one flat all-reduce after the whole accumulated backward. (DDP's
    reducer allows one backward per forward; the step-wise loss makes one per chunk, so both scripts
    reduce by hand, identically.)"""
    if world == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def global_mean(values: list, world: int) -> list:
    """Average logged numbers over processes, so rank 0 logs the loss of the whole global batch."""
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return (t / world).tolist()


def prepare_run(cfg, device):
    """Corpus, batches, validation subset, folder and config.json; the shared start of both scripts."""
    corpus = D.prepare(cfg.data, cfg.data_dir or None, cfg.vocab_size, cfg.work_dir, cfg.separator)
    rank, world = setup_distributed()
    batches = D.Batches(corpus.train, cfg.seq_len, cfg.batch_size, cfg.seed + 1, rank, world)
    val = D.val_sequences(corpus.dev, cfg.seq_len, cfg.eval_max_seqs)
    micro = cfg.micro_batch or (cfg.batch_size // world if device.type == "cuda" else min(16, cfg.batch_size // world))
    per_rank = cfg.batch_size // world
    if per_rank % micro:
        raise ValueError(f"batch {cfg.batch_size} over {world} process(es) is {per_rank} per process, "
                         f"not a multiple of --micro-batch {micro}")
    os.makedirs(cfg.out_dir, exist_ok=True)
    if rank == 0:
        with open(os.path.join(cfg.out_dir, "config.json.tmp"), "w") as f:
            json.dump(asdict(cfg), f, indent=2)
        os.replace(os.path.join(cfg.out_dir, "config.json.tmp"), os.path.join(cfg.out_dir, "config.json"))
    return corpus, batches, val, micro, per_rank // micro, rank, world


class RunLog:
    """log.jsonl in the run folder; on resume, records after the checkpoint's step are dropped so the
    file reads as one uninterrupted run."""

    def __init__(self, out_dir: str, resume_step: int = -1, enabled: bool = True):
        self.path, self.enabled = os.path.join(out_dir, "log.jsonl"), enabled
        if not enabled:
            return
        keep = []
        if resume_step >= 0 and os.path.isfile(self.path):
            for line in open(self.path):
                try:  # a kill mid-write leaves a partial last line: dropped with the records past the checkpoint
                    if json.loads(line).get("step", 0) <= resume_step:
                        keep.append(line)
                except json.JSONDecodeError:
                    pass
        with open(self.path, "w") as f:
            f.writelines(keep)

    def write(self, **record):
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def check_finite(loss: float, step: int, precision: str):
    if not math.isfinite(loss) and precision != "fp16":
        raise FloatingPointError(f"loss is {loss} at step {step} ({precision}); stopped without overwriting "
                                 f"the last good checkpoint: lower --lr or use --precision fp32")


# ---------------------------------------------------------------------------------------------------------
# the teacher run


def train(cfg: TrainConfig) -> dict:
    cfg.out_dir = cfg.out_dir or os.path.join(cfg.work_dir, f"teacher-{cfg.preset}-{cfg.data}")
    M.get_config(cfg.preset)  # an unknown preset fails here, before any data work
    if cfg.deterministic:
        set_determinism()
    set_seed(cfg.seed)
    device = get_device(cfg.device)
    corpus, batches, val, micro, accum, rank, world = prepare_run(cfg, device)
    mcfg = M.get_config(cfg.preset, vocab_size=corpus.tokenizer.vocab_size,
                        **({"dropout": cfg.dropout} if cfg.dropout >= 0 else {}))
    model = M.build_model(mcfg, seed=cfg.seed).to(device)
    lr = cfg.lr or TEACHER_LR[mcfg.arch]
    total = batches.steps_per_epoch * cfg.epochs
    total = min(total, cfg.max_steps) if cfg.max_steps else total
    precision = resolve_precision(cfg.precision, device, model, val[:micro].to(device))
    optimizer = configure_optimizer(model, lr, cfg.weight_decay, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    step, best_val = 0, float("inf")
    last = os.path.join(cfg.out_dir, "ckpt_last.pt")
    if cfg.resume and os.path.isfile(last):
        ckpt = load_checkpoint(last, model, optimizer, scaler)
        step, best_val = ckpt["step"], ckpt["best_val"]
    log = RunLog(cfg.out_dir, step if cfg.resume else -1, enabled=rank == 0)
    model.train()
    broadcast_params(model, world)
    fwd = torch.compile(model) if cfg.compile else model
    if rank == 0:
        print(f"{cfg.preset}: {model.num_params():,} params | {precision} on {device} | {total} steps of "
              f"{cfg.batch_size}x{cfg.seq_len} tokens ({accum} x {micro} per process, {world} process(es)) | "
              f"lr {lr:g} | out {cfg.out_dir}")
    bar = tqdm(total=total, initial=step, disable=rank != 0, unit="step", dynamic_ncols=True)
    t_last, since, skipped = time.perf_counter(), 0, 0
    limit = min(total, cfg.stop_after or total)
    while step < limit:
        epoch, start = divmod(step, batches.steps_per_epoch)
        for _, batch in batches.epoch(epoch, start):
            lr_now = get_lr(step, lr, cfg.warmup, total, cfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr_now
            loss_sum = 0.0
            for x in batch.to(device).split(micro):  # gradient accumulation
                with autocast_ctx(device, precision):
                    logits = fwd(x)  # (b, T, V)
                loss = cross_entropy(logits, next_token_targets(x))
                scaler.scale(loss / accum).backward()
                loss_sum += loss.item() / accum
            loss_sum, = global_mean([loss_sum], world)
            check_finite(loss_sum, step, precision)
            all_reduce_grads(model, world)
            scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
            scale_before = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            skipped += int(scaler.is_enabled() and scaler.get_scale() < scale_before)  # fp16 inf/NaN: step skipped
            optimizer.zero_grad(set_to_none=True)
            step, since = step + 1, since + 1
            bar.update(1)
            end_of_epoch = step % batches.steps_per_epoch == 0 or step == total
            if rank == 0 and (step % cfg.log_every == 0 or end_of_epoch):
                tok_s = since * cfg.batch_size * cfg.seq_len / (time.perf_counter() - t_last)
                bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{tok_s:,.0f}")
                log.write(step=step, epoch=epoch, loss=loss_sum, lr=lr_now, grad_norm=norm, tok_s=tok_s,
                          skipped_steps=skipped)
                t_last, since = time.perf_counter(), 0
            t_pause = time.perf_counter()  # validation and checkpoints do not count against tokens/s
            if end_of_epoch or (cfg.eval_every and step % cfg.eval_every == 0):
                val_loss = estimate_val_loss(model, val, micro, device, precision)
                log.write(step=step, epoch=epoch, val_loss=val_loss)
                if rank == 0:
                    tqdm.write(f"step {step}/{total} | epoch {epoch} | val loss {val_loss:.4f}")
                if val_loss < best_val:
                    best_val = val_loss
                    if rank == 0:
                        save_checkpoint(os.path.join(cfg.out_dir, "ckpt_best.pt"), model, optimizer, scaler, step,
                                        cfg, best_val, corpus.tokenizer)
            stopping = step >= limit
            if rank == 0 and (step % cfg.ckpt_every == 0 or end_of_epoch or stopping):
                save_checkpoint(last, model, optimizer, scaler, step, cfg, best_val, corpus.tokenizer)
            t_last += time.perf_counter() - t_pause
            if stopping:
                break
    bar.close()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return {"step": step, "best_val": best_val, "precision": precision, "out_dir": cfg.out_dir}


def main(argv=None):
    cfg = parse_config(TrainConfig, argv, __doc__)
    try:
        summary = train(cfg)
    except (ValueError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"done: {summary}")


if __name__ == "__main__":
    main()
