"""Teacher cache (docs/teacher_cache.md): each frozen teacher runs once over a data set's training windows
at one offset, and every variant (and every epoch, with fixed windows) reads its targets from disk instead of
running the teacher again; random windows open the cache of each epoch's offset.

    python distill.py --variant ChooBaCa-fw-1-24 --teacher-cache exact         # built on first use, then read
    python teacher_cache.py compare out/ChooBaCa-fw-1-24                       # the compact form's error

Two forms:
  exact    the teacher's final hidden states (after its last norm), (windows, T, C) in the run's compute
           dtype; the logits are recomputed by the teacher's head (~4% of a 360M teacher's FLOPs), so mixing
           (eq. 2), both KLs and the teacher combination are the same numbers as running the teacher.
           4C bytes a token in fp32, 2C in bf16 (llama-360m, C = 1024: 2.0 GB per million tokens in bf16;
           gpt2-705m, C = 1536: 3.1 GB).
  compact  per position the k largest logits minus the row's max (fp16), their vocabulary ids (int16) and
           `rest` = log sum over the other ids of exp((z - max z) / T) at the run's temperature T (fp32):
           dense logits are rebuilt with the top k probabilities and the tail's total mass of softmax(z / T)
           kept, the tail shaped like the student's current logits there (TopK.logits). 4k + 4 bytes a
           token (k = 64: 0.26 GB per million tokens). An approximation: `compare` reports its error.

A cache is a folder <cache_dir>/<teacher run>-<form>-<key>/ holding meta.json and one raw array file per
field. The key hashes everything the targets depend on (teacher checkpoint, tokenizer, token stream, window
length and offset, dtype; for compact also k and T), so a retrained teacher gets a new cache; opening re-checks
meta.json against the run and every file's size, and refuses a mismatch in one line. A build writes into
<folder>.partial/, one block of windows at a time, marking a block done only after its rows are flushed, so
a killed build resumes where it stopped; the folder is renamed into place only when whole, and meta.json is
written last, so a half-written cache is never read. One process builds at a time (a lock file); under
torchrun the ranks build disjoint blocks. Shapes: b windows, T time, C teacher width, V vocab, k kept ids.
"""
import argparse
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import data as D
import model as M
from cli import guard
from losses import kd_loss
from runtime import autocast_ctx, get_device

FORMS = ["off", "exact", "compact"]
STORE = {"fp32": (np.float32, torch.float32), "bf16": (np.int16, torch.bfloat16), "fp16": (np.float16, torch.float16)}
BLOCK = 256  # windows per resumable unit of a build


@dataclass(frozen=True)
class Spec:
    """Everything the cached targets depend on; its hash names the folder."""
    form: str
    dtype: str  # the run's compute dtype (precision)
    teacher_sha: str
    tokenizer_sha: str
    tokens_sha: str
    seq_len: int
    n_windows: int
    dim: int
    vocab: int
    k: int = 0  # compact only
    temperature: float = 0.0  # compact only
    offset: int = 0  # the windows are tokens[offset + i T : offset + (i + 1) T]

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def arrays(self) -> dict:
        """name -> (shape, numpy dtype) of the files."""
        n, T = self.n_windows, self.seq_len
        if self.form == "exact":
            return {"hidden": ((n, T, self.dim), STORE[self.dtype][0])}
        return {"values": ((n, T, self.k), np.float16), "ids": ((n, T, self.k), np.int16 if self.vocab <= 32768 else
                                                                 np.int32), "rest": ((n, T), np.float32)}

    def bytes_per_token(self) -> int:
        return sum(np.dtype(dt).itemsize * math.prod(shape[2:]) for shape, dt in self.arrays().values())


def make_spec(form: str, precision: str, teacher_path: str, teacher: M.Transformer, tokenizer_sha: str,
              tokens: np.ndarray, tokens_sha: str, seq_len: int, k: int = 64, temperature: float = 2.0,
              offset: int = 0) -> Spec:
    c = teacher.config
    compact = form == "compact"
    return Spec(form, precision, D.hash_files([teacher_path]), tokenizer_sha, tokens_sha, seq_len,
                D.n_windows(len(tokens), seq_len), c.dim, c.vocab_size, min(k, c.vocab_size) if compact else 0,
                float(temperature) if compact else 0.0, offset)


# ---------------------------------------------------------------------------------------------------------
# the teacher's targets for one micro-batch, as distill_micro_step reads them chunk by chunk


class Hidden:
    """Final hidden states (b, T, C), from running the teacher or from an exact cache; logits via its head."""

    def __init__(self, h: torch.Tensor):
        self.h = h

    def logits(self, teacher: M.Transformer, s: int, e: int, student: torch.Tensor = None) -> torch.Tensor:
        return teacher.head(self.h[:, s:e].contiguous())  # (b, e - s, V)


class TopK:
    """The compact form: values (b, T, k) = top-k logits minus the row max, ids (b, T, k), rest (b, T)."""

    def __init__(self, values, ids, rest, vocab: int, temperature: float):
        self.values, self.ids, self.rest, self.vocab, self.temperature = values, ids, rest, vocab, temperature

    def logits(self, teacher, s: int, e: int, student: torch.Tensor = None) -> torch.Tensor:
        """Dense (b, e - s, V) fp32 logits: the kept ones at their ids; the other V - k ids share exp(rest),
        the tail's mass of softmax(z / T), in the shape of the student's logits on them (`student`, this
        chunk's, detached: a constant of the step like eq. 2's stopgrad), or evenly without a student. With
        the student's shape the tail adds only its mass difference to either KL (the tail seen as one
        outcome), not a divergence between a real and an invented shape. A tail with no mass (k = V, or
        underflow) gets a finite floor, so p log p stays 0 and not NaN."""
        T, values, ids, rest = self.temperature, self.values[:, s:e].float(), self.ids[:, s:e].long(), self.rest[:, s:e]
        if student is None:  # evenly: (V - k) exp(fill / T) = exp(rest)
            spare = self.vocab - values.shape[-1]
            fill = T * (rest - math.log(spare)) if spare else torch.full_like(rest, -1e4)
            z = fill.clamp(min=-1e4).unsqueeze(-1).expand(*rest.shape, self.vocab).contiguous()
        else:  # z_S + c, with sum over the tail of exp((z_S + c) / T) = exp(rest)
            z = student.detach().float()
            shift = T * (rest - torch.logsumexp((z / T).scatter(-1, ids, float("-inf")), dim=-1))
            z = z + shift.nan_to_num(nan=-1e4).clamp(min=-1e4).unsqueeze(-1)
        return z.scatter_(-1, ids, values)


def topk_targets(z: torch.Tensor, k: int, temperature: float) -> tuple:
    """Logits (b, T, V) -> (values fp16, ids, rest fp32) of the compact form."""
    z = z.float()
    z = z - z.amax(-1, keepdim=True)
    values, ids = z.topk(k, dim=-1)
    rest = torch.logsumexp((z / temperature).scatter(-1, ids, float("-inf")), dim=-1)  # -inf when k = V
    return values.half(), ids, rest


# ---------------------------------------------------------------------------------------------------------
# building and opening


def _size(n: int) -> str:
    return next(f"{n / f:.1f} {u}" for f, u in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1, "B")) if n >= f or f == 1)


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _barrier(world: int):
    if world > 1:
        dist.barrier()


def build(teacher: M.Transformer, spec: Spec, folder: str, tokens: np.ndarray, device, batch: int = None,
          rank: int = 0, world: int = 1, max_blocks: int = None, quiet: bool = False) -> bool:
    """Run the frozen teacher (in the compute dtype) over every window and write `folder` (module doc).
    `batch` windows per forward (None: 64 on a CPU; on a GPU 512, or 128 for compact, whose (batch, T, V) fp32
    logits are 1 GB at 128 x 128 x 16000). `max_blocks` stops after that many blocks, as a kill would
    (tests); returns whether the cache is whole."""
    partial, T = folder + ".partial", spec.seq_len
    batch = batch or (64 if device.type == "cpu" else 512 if spec.form == "exact" else 128)
    done_dir = os.path.join(partial, "done")
    os.makedirs(os.path.dirname(os.path.abspath(folder)), exist_ok=True)
    lock = open(folder + ".lock", "a+") if rank == 0 else None
    try:
        if lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process building the same cache: wait for it
        state = [os.path.isdir(folder), None]  # built already; a reason to refuse
        need = spec.bytes_per_token() * spec.n_windows * T
        if rank == 0 and not state[0] and not os.path.isdir(partial):  # refused before the first block
            free = shutil.disk_usage(os.path.dirname(os.path.abspath(folder))).free
            if free < need:
                state[1] = (f"teacher cache {folder} needs {_size(need)} and {_size(free)} are free: free space, "
                            f"move it with --cache-dir, or use --teacher-cache compact")
        if world > 1:  # rank 0's view, the one holding the lock
            dist.broadcast_object_list(state, src=0)
        if state[0]:
            return True
        if state[1]:
            raise ValueError(state[1])
        if rank == 0:
            spec_path = os.path.join(partial, "spec.json")
            if os.path.isdir(partial) and _read_json(spec_path) != asdict(spec):
                shutil.rmtree(partial)  # left by a build of something else: start afresh
            if not os.path.isdir(partial):
                os.makedirs(done_dir)
                for name, (shape, dt) in spec.arrays().items():
                    np.memmap(os.path.join(partial, name + ".bin"), dtype=dt, mode="w+", shape=shape).flush()
                M.atomic_write(spec_path, json.dumps(asdict(spec)).encode())
        _barrier(world)
        arrays = {name: np.memmap(os.path.join(partial, name + ".bin"), dtype=dt, mode="r+", shape=shape)
                  for name, (shape, dt) in spec.arrays().items()}
        n_blocks = -(-spec.n_windows // BLOCK)
        todo = [b for b in range(rank, n_blocks, world) if not os.path.exists(os.path.join(done_dir, str(b)))]
        bar = tqdm(total=sum(min(BLOCK, spec.n_windows - b * BLOCK) for b in todo) * T, unit="tok", unit_scale=True,
                   desc=f"teacher cache {os.path.basename(folder)}", disable=quiet or rank != 0, dynamic_ncols=True)
        precision = spec.dtype
        for n, b in enumerate(todo):
            if max_blocks is not None and n >= max_blocks:
                return False
            for s in range(b * BLOCK, min((b + 1) * BLOCK, spec.n_windows), batch):
                idx = torch.arange(s, min(s + batch, (b + 1) * BLOCK, spec.n_windows))
                x = D.window_rows(tokens, idx, T, spec.offset).to(device)
                with torch.no_grad(), autocast_ctx(device, precision):
                    h = teacher.hidden(x)  # (b, T, C)
                    if spec.form == "exact":
                        out = {"hidden": h.to(STORE[precision][1]).cpu().view(torch.int16 if precision == "bf16"
                                                                                else STORE[precision][1]).numpy()}
                    else:
                        values, ids, rest = topk_targets(teacher.head(h), spec.k, spec.temperature)
                        out = {"values": values.cpu().numpy(), "ids": ids.cpu().numpy().astype(arrays["ids"].dtype),
                               "rest": rest.cpu().numpy()}
                for name, rows in out.items():
                    arrays[name][s:s + len(idx)] = rows
                bar.update(len(idx) * T)
            for a in arrays.values():
                a.flush()
            open(os.path.join(done_dir, str(b)), "w").close()  # after the flush: a marked block is on disk
        bar.close()
        _barrier(world)
        if rank == 0:
            missing = [b for b in range(n_blocks) if not os.path.exists(os.path.join(done_dir, str(b)))]
            if missing:
                raise ValueError(f"teacher cache {partial}: blocks {missing[:5]} were never written; rerun to resume")
            shutil.rmtree(done_dir)
            os.remove(os.path.join(partial, "spec.json"))
            M.atomic_write(os.path.join(partial, "meta.json"), json.dumps(
                {"spec": asdict(spec), "bytes_per_token": spec.bytes_per_token(), "built": time.time()}).encode())
            os.replace(partial, folder)
        _barrier(world)
        return True
    finally:
        if lock:
            lock.close()


class TeacherCache:
    """A finished cache, memory-mapped read-only; fetch(window ids) -> the targets of those windows."""

    def __init__(self, folder: str, spec: Spec):
        meta = _read_json(os.path.join(folder, "meta.json"))
        if not isinstance(meta, dict) or "spec" not in meta:
            raise ValueError(f"teacher cache {folder} is not finished or is damaged (no readable meta.json): delete "
                             f"it to rebuild")
        saved = meta["spec"]
        diff = [k for k, v in asdict(spec).items() if saved.get(k) != v]
        if diff:
            raise ValueError(f"teacher cache {folder} was built for another run: " + ", ".join(
                f"{k} {saved.get(k)!r} (now {getattr(spec, k)!r})" for k in diff) + "; delete it or use another "
                "--cache-dir")
        self.spec, self.arrays = spec, {}
        for name, (shape, dt) in spec.arrays().items():
            path = os.path.join(folder, name + ".bin")
            want = math.prod(shape) * np.dtype(dt).itemsize
            if not os.path.isfile(path) or os.path.getsize(path) != want:
                raise ValueError(f"teacher cache {folder}: {name}.bin is missing or damaged (expected {want:,} "
                                 f"bytes): delete the folder to rebuild")
            self.arrays[name] = np.memmap(path, dtype=dt, mode="r", shape=shape)

    def fetch(self, idx: torch.Tensor, device):
        rows = {name: torch.from_numpy(a[idx.numpy()]) for name, a in self.arrays.items()}  # a copy, in order
        pin = device.type == "cuda"
        rows = {k: (v.pin_memory() if pin else v).to(device, non_blocking=pin) for k, v in rows.items()}
        if self.spec.form == "exact":
            return Hidden(rows["hidden"].view(STORE[self.spec.dtype][1]))
        return TopK(rows["values"], rows["ids"], rows["rest"], self.spec.vocab, self.spec.temperature)


def open_caches(teachers: list, paths: list, form: str, precision: str, tokenizer_sha: str, tokens: np.ndarray,
                seq_len: int, cache_dir: str, device, k: int = 64, temperature: float = 2.0, rank: int = 0,
                world: int = 1, batch: int = None, offset: int = 0) -> list:
    """One TeacherCache per teacher over the windows at `offset`, built first where missing."""
    caches, tokens_sha = [], hashlib.sha256(np.ascontiguousarray(tokens).tobytes()).hexdigest()[:16]
    for teacher, path in zip(teachers, paths):
        spec = make_spec(form, precision, path, teacher, tokenizer_sha, tokens, tokens_sha, seq_len, k, temperature,
                         offset)
        run = os.path.basename(os.path.dirname(os.path.abspath(path)))
        folder = os.path.join(cache_dir, f"{run}-{form}-{spec.key()}")
        _barrier(world)
        if not os.path.isdir(folder):
            t0 = time.time()
            build(teacher, spec, folder, tokens, device, batch, rank, world)
            if rank == 0:
                print(f"teacher cache {folder}: {spec.n_windows * seq_len:,} tokens, {spec.bytes_per_token()} bytes "
                      f"a token, {time.time() - t0:.1f}s")
        caches.append(TeacherCache(folder, spec))
    return caches


# ---------------------------------------------------------------------------------------------------------
# the compact form's error


def compare(student_logits: torch.Tensor, teacher_logits: list, k: int, temperature: float = 2.0) -> dict:
    """Relative error of each KD loss (value and gradient) when the teachers' logits are rebuilt from the
    compact form instead of used whole. Rows: fw and rv (no mixing), rv with eq. 2 mixing at lambda 0.9,
    and with two teachers fw on averaged logits and rv as the mean of the KLs."""
    rebuilt = [TopK(*topk_targets(z, k, temperature), z.shape[-1], temperature).logits(None, 0, z.shape[1],
                                                                                        student_logits)
               for z in teacher_logits]
    cases = [("fw", 1.0, "logits"), ("rv", 1.0, "kl"), ("rv-mixed", 0.9, "kl")]
    out = {}
    for name, lam, combine in cases:
        res = []
        for targets in (teacher_logits, rebuilt):
            z = student_logits.detach().float().requires_grad_()
            loss = kd_loss(z, [t.float() for t in targets], name[:2], temperature, lam, combine, fused=False)
            loss.backward()
            res.append((loss.item(), z.grad))
        (l0, g0), (l1, g1) = res
        out[name] = {"loss": l0, "loss_rel_err": abs(l1 - l0) / abs(l0),
                     "grad_rel_err": ((g1 - g0).norm() / g0.norm()).item()}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description="The compact cache's error per objective against the exact targets, for "
                                            "a distilled run's teachers and student, on the first training windows.")
    p.add_argument("command", choices=["compare"])
    p.add_argument("run_dir", help="a distillation run folder (config.json, ckpt_best.pt)")
    p.add_argument("--k", default="16,64,256", help="kept logits per position")
    p.add_argument("--windows", type=int, default=64)
    a = p.parse_args(argv)
    with open(os.path.join(a.run_dir, "config.json")) as f:
        cfg = argparse.Namespace(**json.load(f))
    device = get_device("auto")
    corpus = D.prepare(cfg.data, cfg.data_dir, cfg.vocab_size, cfg.work_dir, cfg.separator)
    student, ckpt = M.load_model(os.path.join(a.run_dir, "ckpt_best.pt"), device)
    teachers = [M.load_model(path, device)[0].eval() for path in ckpt["teacher_paths"]]  # checked when distilled
    x = D.window_rows(corpus.train, torch.arange(a.windows), cfg.seq_len).to(device)
    with torch.no_grad():
        z_s, z_t = student.eval()(x).float(), [t(x).float() for t in teachers]
    print(f"# {cfg.variant}: {len(teachers)} teacher(s), {a.windows} windows of {cfg.seq_len}, T = {cfg.temperature}, "
          f"vocab {z_s.shape[-1]}; relative error of the loss and of its gradient, compact against exact")
    for k in (min(int(k), z_s.shape[-1]) for k in a.k.split(",")):
        for name, r in compare(z_s, z_t, k, cfg.temperature).items():
            print(f"k={k} objective={name} loss={r['loss']:.5f} loss_rel_err={r['loss_rel_err']:.2e} "
                  f"grad_rel_err={r['grad_rel_err']:.2e} bytes_per_token={4 * k + 4}")


if __name__ == "__main__":
    guard(main)()
