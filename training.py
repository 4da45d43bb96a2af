"""What the two training loops share (train_teacher.py, distill.py): the base config (one flag per field,
validated before anything is written), the learning-rate schedule, AdamW, validation, checkpoints, the run
log, and `Run`: a run's state and the tail of every optimizer step. A loop writes only its forward and
backward; `Run` does the rest, the same for both.

Shape legend: B batch (sequences), T time, V vocab.
"""
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import data as D
import model as M
from cli import opt
from losses import cross_entropy
from parallel import GradReducer, broadcast_params, gather_objects, global_mean, rank_seed, setup_distributed
from runtime import autocast_ctx, get_device, set_determinism, set_seed


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
    window_offset: Optional[int] = opt(None, "this window offset in every epoch, whatever the seed (fixed windows "
                                             "that every seed shares, so one teacher cache serves them all); None: "
                                             "drawn from the seed")
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
        for f in self.__dataclass_fields__.values():
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
        if self.window_offset is not None and not 0 <= self.window_offset < self.seq_len:
            raise ValueError(f"--window-offset {self.window_offset}: must lie in [0, --seq-len {self.seq_len})")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError:
                raise ValueError(f"--device {self.device!r}: use auto, cpu, cuda, cuda:N or mps") from None


# resuming may change these; any other difference from the saved config is refused
RESUMABLE = {"resume", "stop_after", "device", "precision", "log_every", "ckpt_every", "eval_every", "compile",
             "deterministic", "data_dir", "work_dir", "out_dir", "micro_batch", "keep_every", "teacher_cache",
             "cache_dir", "fused_loss"}


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
# schedule, optimizer, validation


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


# ---------------------------------------------------------------------------------------------------------
# a run


class Run:
    """A training run: its data, processes and optimizer state, and the tail of every optimizer step.

        run = Run(cfg)                               # refusals first: nothing is written yet
        run.start(model, lr, precision)              # config.json, optimizer, resume, log, progress bar
        for epoch, windows, batch in run.steps():    # every optimizer step left, its learning rate set
            for ids, x in run.micro_batches(windows, batch):
                loss = ...                           # the loop's own forward
                run.backward(loss)
            run.end_step(epoch, loss=..., ...)       # reduce, clip, step, log, validate, checkpoint
        run.close()
    """

    def __init__(self, cfg):
        """Everything before the model: the resume check, seeds, device, data and processes."""
        self.cfg, self.last = cfg, os.path.join(cfg.out_dir, "ckpt_last.pt")
        check_resume(cfg, self.last)
        if cfg.deterministic:
            set_determinism()
        set_seed(cfg.seed)
        self.device = get_device(cfg.device)
        self.corpus = D.prepare(cfg.data, cfg.data_dir, cfg.vocab_size, cfg.work_dir, cfg.separator)
        self.rank, self.world = setup_distributed(self.device)
        self.batches = D.Batches(self.corpus.train, cfg.seq_len, cfg.batch_size, cfg.seed + 1, self.rank, self.world,
                                 cfg.fixed_windows, cfg.window_offset)
        self.val = D.val_sequences(self.corpus.dev, cfg.seq_len, cfg.eval_max_seqs)
        per_rank = cfg.batch_size // self.world
        self.micro = cfg.micro_batch or (per_rank if self.device.type == "cuda" else min(16, per_rank))
        if per_rank % self.micro:
            raise ValueError(f"batch {cfg.batch_size} over {self.world} process(es) is {per_rank} per process, "
                             f"not a multiple of --micro-batch {self.micro}")
        self.accum = per_rank // self.micro
        total = self.batches.steps_per_epoch * cfg.epochs
        self.total = min(total, cfg.max_steps) if cfg.max_steps else total
        self.limit = min(self.total, cfg.stop_after or self.total)

    def start(self, model, lr: float, precision: str, accumulations: dict = None, extra=None, snapshot: dict = None):
        """config.json, the optimizer, a resumed state, the log and the progress bar. `accumulations`: backward
        passes per micro-batch reaching a parameter (GradReducer); `extra()`: entries added to every checkpoint
        (called on every rank: it may gather); `snapshot`: entries of the weights-only snapshots."""
        cfg = self.cfg
        write_config(cfg, self.rank)
        self.model, self.lr_peak, self.precision = model, lr, precision
        self.optimizer = configure_optimizer(model, lr, cfg.weight_decay, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.step, self.best_val, self.resumed = 0, float("inf"), None
        if cfg.resume and os.path.isfile(self.last):
            self.resumed = load_checkpoint(self.last, model, self.optimizer, self.scaler, self.rank, self.world,
                                           self.device)
            self.step, self.best_val = self.resumed["step"], self.resumed["best_val"]
        self.log = RunLog(cfg.out_dir, self.step if cfg.resume else -1, enabled=self.rank == 0)
        model.train()
        broadcast_params(model, self.world)
        if self.world > 1:  # every rank its own dropout stream (the weights are rank 0's, just broadcast)
            torch.manual_seed(rank_seed(cfg.seed, self.rank))
        self.reducer = GradReducer(model, self.world, accumulations)
        self.extra, self.snapshot = extra or dict, snapshot or {}
        self.bar = tqdm(total=self.total, initial=self.step, disable=self.rank != 0, unit="step", dynamic_ncols=True)
        self.t_last, self.since, self.skipped = time.perf_counter(), 0, 0

    def steps(self):
        """(epoch, window ids, batch) for every optimizer step left, with the step's learning rate set."""
        while self.step < self.limit:
            epoch, start = divmod(self.step, self.batches.steps_per_epoch)
            for windows, batch in self.batches.epoch_windows(epoch, start):
                self.lr = get_lr(self.step, self.lr_peak, self.cfg.warmup, self.total, self.cfg.min_lr)
                for group in self.optimizer.param_groups:
                    group["lr"] = self.lr
                yield epoch, windows, batch
                if self.step >= self.limit:
                    return

    def micro_batches(self, windows: torch.Tensor, batch: torch.Tensor):
        """(window ids, x on the device) of each micro-batch; gradient reduction is armed before the last."""
        for i, (ids, x) in enumerate(zip(windows.split(self.micro), batch.split(self.micro))):
            if i == self.accum - 1:
                self.reducer.arm()  # the last micro-batch: buckets all-reduce as their gradients complete
            yield ids, x.to(self.device)

    def backward(self, loss: torch.Tensor):
        """A micro-batch's share of the step's gradient, under the fp16 loss scale."""
        self.scaler.scale(loss / self.accum).backward()

    def end_step(self, epoch: int, **logged):
        """After the micro-batches: average the logged numbers (0-d tensors summed over the micro-batches;
        `loss` among them) over micro-batches and processes in one sync, refuse a non-finite loss, then clip,
        step (the fp16 GradScaler skips inf/NaN steps and they are counted), log, validate (keeping the best
        checkpoint) and write the last checkpoint and snapshots."""
        cfg, step = self.cfg, self.step
        names, values = list(logged), [v / self.accum if torch.is_tensor(v) else v for v in logged.values()]
        tensors = [i for i, v in enumerate(values) if torch.is_tensor(v)]
        for i, v in zip(tensors, global_mean(torch.stack([values[i] for i in tensors]).tolist(), self.world,
                                             self.device)):
            values[i] = v
        logged = dict(zip(names, values))
        check_finite(logged["loss"], step, self.precision)
        self.reducer.finish()
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip).item()
        scale_before = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.skipped += int(self.scaler.is_enabled() and self.scaler.get_scale() < scale_before)
        self.reducer.zero_grad(self.optimizer)
        self.step, self.since = step + 1, self.since + 1
        step = self.step
        self.bar.update(1)
        end_of_epoch = step % self.batches.steps_per_epoch == 0 or step == self.total
        if self.rank == 0 and (step % cfg.log_every == 0 or end_of_epoch):
            tok_s = self.since * cfg.batch_size * cfg.seq_len / (time.perf_counter() - self.t_last)
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in logged.items() if isinstance(v, float)}, tok_s=f"{tok_s:,.0f}")
            self.log.write(step=step, epoch=epoch, **logged, lr=self.lr, grad_norm=norm, tok_s=tok_s,
                           skipped_steps=self.skipped)
            self.t_last, self.since = time.perf_counter(), 0
        t_pause = time.perf_counter()  # validation and checkpoints do not count against tokens/s
        saving = step % cfg.ckpt_every == 0 or end_of_epoch or step >= self.limit
        evaluating = end_of_epoch or (cfg.eval_every and step % cfg.eval_every == 0)
        extra = self.extra() if saving or evaluating else {}  # every rank: it may gather
        if evaluating:
            val_loss = estimate_val_loss(self.model, self.val, self.micro, self.device, self.precision, self.rank,
                                         self.world)
            self.log.write(step=step, epoch=epoch, val_loss=val_loss)
            if self.rank == 0:
                tqdm.write(f"step {step}/{self.total} | epoch {epoch} | val loss {val_loss:.4f}")
            if val_loss < self.best_val:  # the same on every rank: validation is all-reduced
                self.best_val = val_loss
                self.save(os.path.join(cfg.out_dir, "ckpt_best.pt"), extra)
        if saving:
            self.save(self.last, extra)
        if self.rank == 0 and cfg.keep_every and step % cfg.keep_every == 0:  # weights only: lab/measures.py
            M.save_model(self.model, os.path.join(cfg.out_dir, f"ckpt_step{step}.pt"), step=step, config=asdict(cfg),
                         tokenizer_sha=self.corpus.tokenizer.sha,
                         tokenizer_path=os.path.abspath(self.corpus.tokenizer.path), **self.snapshot)
        self.t_last += time.perf_counter() - t_pause

    def save(self, path: str, extra: dict):
        save_checkpoint(path, self.model, self.optimizer, self.scaler, self.step, self.cfg, self.best_val,
                        self.corpus.tokenizer, self.rank, self.world, self.device, **extra)

    def close(self) -> dict:
        self.bar.close()
        if self.world > 1:
            dist.barrier()
            dist.destroy_process_group()
        return {"step": self.step, "best_val": self.best_val, "precision": self.precision, "out_dir": self.cfg.out_dir}
