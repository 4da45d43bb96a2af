"""The run machinery both training loops share: the base config (one flag per field, validated once before
anything is written), seeds, device and precision, the learning-rate schedule, the optimizer, checkpoints,
the distributed helpers and the run log. train_teacher.py and distill.py are the two loops built on it.

Shape legend: B batch (sequences), T time, V vocab.
"""
import argparse
import contextlib
import ctypes
import ctypes.util
import json
import math
import os
import random
import sys
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

import data as D
import model as M
from losses import cross_entropy
from parallel import gather_objects, rank_seed, setup_distributed


def opt(default, help: str, choices=None):
    """A config field with its --help text (and allowed values); None always means "derived: see help"."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    """The teacher run (README "Teachers"); distill.py's DistillConfig extends it."""
    preset: str = opt("llama-360m", "model preset (model.py PRESETS)", list(M.PRESETS))
    data: str = opt("2024", "data set layout", list(D.LAYOUTS))
    data_dir: Optional[str] = opt(None, "corpus folder (None: $BABYLM_DIR for 2024, $BABYLM_2023_DIR for 2023, "
                                        "else data/babylm_<data>)")
    work_dir: str = opt("out", "tokenizer, token caches and every run folder")
    out_dir: Optional[str] = opt(None, "run folder (None: <work_dir>/teacher-<preset>-<data>)")
    vocab_size: int = opt(16000, "SentencePiece vocabulary (a soft limit: capped to what the corpus supports)")
    separator: str = opt("none", "token put at each corpus line: none, BOS before, EOS after, or both",
                         ["none", "bos", "eos", "both"])
    epochs: int = opt(4, "epochs over the training windows")
    max_steps: Optional[int] = opt(None, "cap on optimizer steps (None: the epochs decide); the schedule spans it")
    stop_after: Optional[int] = opt(None, "stop with a checkpoint after this many steps; the schedule is unchanged")
    batch_size: int = opt(128, "sequences per optimizer step, all processes together")
    micro_batch: Optional[int] = opt(None, "sequences per forward pass (None: the whole batch on a GPU, 16 on a CPU)")
    seq_len: int = opt(128, "tokens per training sequence")
    fixed_windows: Optional[bool] = opt(None, "the same windows every epoch (the first epoch's random offset; only "
                                              "their order shuffled); None: fixed with a teacher cache (one cache), "
                                              "else a fresh random offset per epoch")
    lr: Optional[float] = opt(None, "peak learning rate (None: 3e-4 for llama, 2.5e-4 for gpt2)")
    warmup: int = opt(300, "linear warmup steps, then cosine to min_lr")
    min_lr: float = opt(0.0, "learning rate at the end of the cosine")
    weight_decay: float = opt(0.0, "AdamW weight decay on matrices only")
    grad_clip: float = opt(1.0, "clip the global gradient norm to this")
    dropout: Optional[float] = opt(None, "dropout (None: the preset's, 0.1 for gpt2, 0 for llama)")
    eval_every: Optional[int] = opt(None, "steps between validations (None: once per epoch and at the end)")
    eval_max_seqs: int = opt(8192, "size of the fixed validation subset")
    ckpt_every: int = opt(100, "steps between ckpt_last.pt writes")
    keep_every: Optional[int] = opt(None, "also keep weights-only snapshots ckpt_step<N>.pt every N steps")
    log_every: int = opt(10, "steps between log lines")
    seed: int = opt(0, "seed of the weights; data order uses seed + 1")
    device: str = opt("auto", "auto (cuda, then mps, then cpu), or a torch device such as cpu or cuda:1")
    precision: str = opt("auto", "auto: bf16 on GPUs that have it, fp16 on other GPUs; on CPUs bf16 only where "
                                 "the CPU has AMX and the model is not tiny, else fp32", ["auto", "fp32", "bf16", "fp16"])
    compile: bool = opt(False, "torch.compile the model")
    deterministic: bool = opt(False, "deterministic kernels (torchtitan's set_determinism)")
    resume: bool = opt(False, "continue from <out_dir>/ckpt_last.pt")

    def validate(self):
        """Every field checked once, before any file is written: one ValueError naming the flag."""
        for flag, path in (("--out-dir", self.out_dir), ("--work-dir", self.work_dir)):
            if path and os.path.exists(path) and not os.path.isdir(path):
                raise ValueError(f"{flag} {path} is a file: give a folder (it is created if missing)")
        for f in fields(self):
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if choices and value not in choices:
                raise ValueError(f"unknown {f.name.replace('_', ' ')} {value!r} (--{f.name.replace('_', '-')}): "
                                 f"use one of {', '.join(map(str, choices))}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "seq_len": self.seq_len,
                    "eval_max_seqs": self.eval_max_seqs, "ckpt_every": self.ckpt_every, "log_every": self.log_every,
                    "micro_batch": self.micro_batch, "max_steps": self.max_steps, "stop_after": self.stop_after,
                    "eval_every": self.eval_every, "keep_every": self.keep_every, "lr": self.lr,
                    "grad_clip": self.grad_clip}
        for name, v in positive.items():
            if v is not None and not v > 0:
                raise ValueError(f"--{name.replace('_', '-')} {v}: must be positive")
        for name in ("warmup", "min_lr", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: must not be negative")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout {self.dropout}: must lie in [0, 1)")
        if not 8 <= self.vocab_size < 65536:
            raise ValueError(f"--vocab-size {self.vocab_size}: must lie in [8, 65536) (uint16 token caches)")
        max_len = M.get_config(self.preset).max_seq_len
        if not 2 <= self.seq_len <= max_len:
            raise ValueError(f"--seq-len {self.seq_len}: preset {self.preset} takes sequences of 2 to {max_len} tokens")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError:
                raise ValueError(f"--device {self.device!r}: use auto, cpu, cuda, cuda:N or mps") from None


def _base_type(t):
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return args[0] if args else t


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one `error: ...` line (exit 2), like every other refusal here."""

    def error(self, message):
        print(f"error: {message}: see --help", file=sys.stderr)
        sys.exit(2)


def parse_config(cls, argv=None, doc: str = ""):
    """argparse generated from the dataclass fields, with each field's help, choices and default (the
    choices are checked by validate(), with the same one-line error as every other field); --config
    run.json supplies defaults; unknown flags and unknown JSON keys are errors."""
    p = OneLineParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="JSON file with any of the fields below")
    for f in fields(cls):
        name, kind = "--" + f.name.replace("_", "-"), _base_type(f.type)
        default = f.default if f.default is not MISSING else f.default_factory()
        choices = f.metadata.get("choices")
        text = f.metadata.get("help", "") + (f"; one of {', '.join(map(str, choices))}" if choices else "") + \
            f" (default: {default})"
        if kind is bool:
            p.add_argument(name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif kind is list:
            p.add_argument(name, action="append", default=None, help=text + "; repeatable")
        else:
            p.add_argument(name, type=kind, default=None, help=text)
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


# resuming may change these; any other difference from the saved config is refused
RESUMABLE = {"resume", "stop_after", "device", "precision", "log_every", "ckpt_every", "eval_every", "compile",
             "deterministic", "data_dir", "work_dir", "out_dir", "micro_batch", "keep_every", "teacher_cache",
             "cache_dir"}


def check_resume(cfg, path: str):
    """Refuse, naming the keys, to resume a run folder that was trained with another config."""
    if not (cfg.resume and os.path.isfile(path)):
        return
    saved = M.read_checkpoint(path).get("config", {})
    now = asdict(cfg)
    diff = sorted(k for k in now if k not in RESUMABLE and k in saved and saved[k] != now[k])
    if diff:
        raise ValueError(f"cannot resume {path}: it was trained with " + ", ".join(
            f"{k}={saved[k]!r} (now {now[k]!r})" for k in diff) + "; pass the same flags or another --out-dir")


# ---------------------------------------------------------------------------------------------------------
# seeds, device, precision


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


def keep_freed_memory():
    """glibc returns freed blocks above its thresholds to the system and every later tensor of that size
    faults its pages back in, which at the synthetic scale (many 0.1-3 MB activations a step) cost 7% of an
    `rv-1` step and 20% of a cached `fw-1` step (bench.py --synthetic, 1 thread). Blocks up to 32 MiB (the
    largest the option takes) now come from the heap, and the heap is not trimmed below 1 GiB of free memory.
    The same as MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ in the environment; a no-op without glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 32 << 20), libc.mallopt(-1, 1 << 30)  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        pass


def get_device(name: str = "auto") -> torch.device:
    """auto: cuda (this process's LOCAL_RANK under torchrun), then mps, then cpu. On CUDA, fp32 matmuls may
    use TF32 (as Ampere+ defaults for convolutions): 8x the fp32 rate at ~1e-3 relative error. On a CPU the
    process keeps its freed memory (keep_freed_memory)."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    elif torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    else:
        device = torch.device("cpu")
    if device.type == "cpu":
        keep_freed_memory()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return device


def autocast_ctx(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def cpu_has_amx() -> bool:
    """AMX tiles do bf16 matmuls ~6x faster than fp32; an AVX2-only CPU runs bf16 ~100x slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read(1 << 16)
    except OSError:
        return False


def resolve_precision(precision: str, device: torch.device, dim: int = 0) -> str:
    """auto: bf16 on a GPU that has it, fp16 on other GPUs; on a CPU bf16 only with AMX and a model of width
    >= 256 (smaller ones are bound by non-matmul work, where bf16 only adds casts), else fp32. A capability
    check, not a timing probe: the probe this replaced spent minutes on CPUs without fast bf16."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {precision!r}: use auto, fp32, bf16 or fp16")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and dim >= 256 and cpu_has_amx():
        return "bf16"
    return "fp32"


# ---------------------------------------------------------------------------------------------------------
# schedule and optimizer


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


def next_token_targets(x: torch.Tensor) -> torch.Tensor:
    """(B, T) targets: token t+1 at position t, ignore_index at the last position (as HF's labels=inputs)."""
    y = torch.full_like(x, -100)
    y[:, :-1] = x[:, 1:]
    return y


@torch.no_grad()
def estimate_val_loss(model, val: torch.Tensor, micro_batch: int, device, precision: str, rank: int = 0,
                      world: int = 1) -> float:
    """Mean next-token cross-entropy over every token of the fixed validation subset; with several
    processes each scores every world-th sequence and the sums are all-reduced."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # total loss, token count
    mine = val[rank::world]
    for i in range(0, len(mine), micro_batch):
        x = mine[i:i + micro_batch].to(device)
        y = next_token_targets(x)
        with autocast_ctx(device, precision):
            logits = model(x)
        n = (y != -100).sum()
        sums += torch.stack([cross_entropy(logits, y).double() * n, n.double()])
    if world > 1:
        dist.all_reduce(sums)
    model.train(was_training)
    total, count = sums.tolist()
    return total / count


def check_finite(loss: float, step: int, precision: str):
    if not math.isfinite(loss) and precision != "fp16":
        raise FloatingPointError(f"loss is {loss} at step {step} ({precision}); stopped without overwriting "
                                 f"the last good checkpoint: lower --lr or use --precision fp32")


# ---------------------------------------------------------------------------------------------------------
# checkpoints


def rng_state(device=None) -> dict:
    """This process's streams: python, numpy, torch CPU and, on a GPU, its own device's (not every GPU's)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device is not None and device.type == "cuda" else None}


def set_rng_state(states, rank: int = 0, world: int = 1, device=None, seed: int = 0, step: int = 0) -> bool:
    """Restore this rank's streams from a checkpoint's per-rank list. A checkpoint written by another number
    of processes (or an old single dict) cannot give every rank its own stream back: each rank is then
    reseeded from (seed, rank, step), deterministically, and False is returned."""
    states = states if isinstance(states, list) else [states]
    if len(states) != world:
        set_seed(rank_seed(seed, rank, step=step))
        return False
    s = states[rank]
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(s["cuda"], device)
    return True


def save_checkpoint(path: str, model, optimizer, scaler, step: int, cfg, best_val: float, tok, rank: int = 0,
                    world: int = 1, device=None, **extra):
    """One dict, written atomically by rank 0: weights of the raw module (never a compiled or DDP wrapper),
    optimizer, scaler, step, config, every rank's RNG states, best validation loss and the tokenizer's
    identity. Every rank calls it (the RNG states are gathered)."""
    rngs = gather_objects(rng_state(device), world)
    if rank != 0:
        return
    raw = getattr(model, "_orig_mod", model)
    raw = getattr(raw, "module", raw)
    M.atomic_save({"model": raw.state_dict(), "model_config": asdict(raw.config), "optimizer": optimizer.state_dict(),
                   "scaler": scaler.state_dict(), "step": step, "config": asdict(cfg), "rng": rngs,
                   "best_val": best_val, "tokenizer_sha": tok.sha, "tokenizer_path": os.path.abspath(tok.path),
                   "vocab_size": tok.vocab_size, **extra}, path)


def load_checkpoint(path: str, model, optimizer, scaler, rank: int = 0, world: int = 1, device=None) -> dict:
    ckpt = M.read_checkpoint(path)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    if not set_rng_state(ckpt["rng"], rank, world, device, seed=ckpt["config"]["seed"], step=ckpt["step"]):
        if rank == 0:
            print(f"resume: {path} was written by {len(ckpt['rng']) if isinstance(ckpt['rng'], list) else 1} "
                  f"process(es), this run has {world}: RNG streams reseeded from (seed, step, rank)")
    return ckpt


def save_snapshot(cfg, model, step: int, tok, **extra):
    """Weights only, ckpt_step<N>.pt, every --keep-every steps: what measures.py scores along training."""
    if cfg.keep_every and step % cfg.keep_every == 0:
        M.save_model(model, os.path.join(cfg.out_dir, f"ckpt_step{step}.pt"), step=step, config=asdict(cfg),
                     tokenizer_sha=tok.sha, tokenizer_path=os.path.abspath(tok.path), **extra)


# ---------------------------------------------------------------------------------------------------------
# the shared start of both loops, and the run log


def prepare_run(cfg, device, write: bool = True):
    """Corpus, batches, validation subset, folder and config.json (written only after validation; with
    write=False the caller writes it with write_config once it has loaded the rest of what it needs)."""
    corpus = D.prepare(cfg.data, cfg.data_dir, cfg.vocab_size, cfg.work_dir, cfg.separator)
    rank, world = setup_distributed(device)
    batches = D.Batches(corpus.train, cfg.seq_len, cfg.batch_size, cfg.seed + 1, rank, world, cfg.fixed_windows)
    val = D.val_sequences(corpus.dev, cfg.seq_len, cfg.eval_max_seqs)
    micro = cfg.micro_batch or (cfg.batch_size // world if device.type == "cuda" else min(16, cfg.batch_size // world))
    per_rank = cfg.batch_size // world
    if per_rank % micro:
        raise ValueError(f"batch {cfg.batch_size} over {world} process(es) is {per_rank} per process, "
                         f"not a multiple of --micro-batch {micro}")
    if write:
        write_config(cfg, rank)
    return corpus, batches, val, micro, per_rank // micro, rank, world


def write_config(cfg, rank: int):
    """The run folder and its config.json: the first thing a run writes."""
    os.makedirs(cfg.out_dir, exist_ok=True)
    if rank == 0:
        M.atomic_write(os.path.join(cfg.out_dir, "config.json"), json.dumps(asdict(cfg), indent=2).encode())


class RunLog:
    """log.jsonl in the run folder; on resume, records after the checkpoint's step are dropped so the
    file reads as one uninterrupted run."""

    def __init__(self, out_dir: str, resume_step: int = -1, enabled: bool = True):
        self.path, self.enabled = os.path.join(out_dir, "log.jsonl"), enabled
        if not enabled:
            return
        keep = []
        if resume_step >= 0 and os.path.isfile(self.path):
            with open(self.path) as f:
                for line in f:
                    try:  # a kill mid-write leaves a partial last line: dropped with the records past the step
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
