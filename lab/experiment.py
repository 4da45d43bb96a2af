"""The synthetic experiment's runs (lab/README.md): students of one cell, one budget and several seeds trained
one after another in one process by distill.py's own train() (no second training loop), each then scored by
lab/measures.py, all against one teacher cache that every seed shares.

    python -m lab.experiment cache --work-dir out --data-dir out/babylm_synthetic            # teachers' caches
    python -m lab.experiment run --work-dir out --data-dir out/babylm_synthetic --cell rv-1+ --steps 1000 \
        --seeds 0-9 --lr 3e-2                                                              # runs/d8/rv-1+/b1000-s*
    python -m lab.experiment run ... --cell fw-1 --lr 1e-1 --sweep                          # judged on val CE only

A run lives in <work>/runs/<size>/<cell>/b<steps>-s<seed>/ (a sweep's in sweep-<cell>-lr<lr>/): distill.py's
config.json, log.jsonl and checkpoints, and eval/measures.json. A run whose outputs exist is skipped, so a
killed group resumes with its next seed.
"""
import argparse
import os
import time

import torch

import distill as DS
from cli import guard
from lab import measures as MS
from runtime import keep_freed_memory
from training import Run

# The cells: the paper's six variants of Table 1 (fw-1 ... rv-2+, as distill.py names them) and the ablation
# ladder's rungs from the positive control's recipe towards the paper's, one ingredient at a time (`-fw` and
# `-rv` are the two objectives of a rung): distill.py flags, nothing else.
TEACHER_FORCED = dict(single_step=False, progressive=False, chunk_size=0, teachers=1)
CELLS = {
    **{v: dict(variant=v) for v in ("fw-1", "fw-2", "rv-1", "rv-2", "rv-1+", "rv-2+")},
    **{f"{rung}-{o}": dict(objective=o, **flags, **TEACHER_FORCED) for o in ("fw", "rv") for rung, flags in (
        ("a", dict(alpha=0.0, temperature=1.0, mixing=False)),     # pure KD at T = 1, on corpus prefixes
        ("b", dict(alpha=0.0, temperature=2.0, mixing=False)),     # (a) at T = 2
        ("c", dict(alpha=0.5, temperature=2.0, mixing=False)),     # (b) with CE (c-fw is fw-1)
        ("d", dict(alpha=0.5, temperature=2.0, mixing=True)))},    # (c) with eq. 2's mixing, constant lambda
    **{f"ap-{o}": dict(objective=o, alpha=0.0, temperature=1.0, mixing=False, single_step=True,  # (a) on the
                       sample_from="student", progressive=False, chunk_size=0, teachers=1)       # student's own
       for o in ("fw", "rv")},                                                                    # samples
}
SIZES = {"d4": "baby-llama-syn-d4", "d8": "baby-llama-syn-d8", "d16": "baby-llama-syn-d16", "d32": "baby-llama-syn",
         "d64": "baby-llama-syn-d64"}
TEACHERS = ("llama-syn", "gpt2-syn")
# the synthetic scale (README "Departures"): 64-token windows of the sentence stream (BOS before and EOS after
# each sentence), batch 32, fp32 on the CPU, the last 16 tokens sampled by the single-step term; every seed
# reads the windows at offset 0 (in its own order) from one exact teacher cache
COMMON = dict(data="synthetic", vocab_size=512, separator="both", seq_len=64, batch_size=32, micro_batch=32,
              device="cpu", precision="fp32", eval_max_seqs=256, teacher1_preset=TEACHERS[0],
              teacher2_preset=TEACHERS[1], teacher_cache="exact", window_offset=0, prompt_len=48)


def run_dir(work_dir: str, size: str, cell: str, steps: int, seed: int, lr: str = "") -> str:
    group = f"sweep-{cell}-lr{lr}" if lr else cell
    return os.path.join(work_dir, "runs", size, group, f"b{steps}-s{seed}")


def config(cell: str, size: str, steps: int, seed: int, lr: float, out_dir: str, work_dir: str, data_dir: str,
           **overrides) -> DS.DistillConfig:
    """One student's distill.py config: a full schedule of `steps` (warmup a tenth of it, then cosine to 0),
    validated twice along it."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}: use one of {', '.join(CELLS)}")
    return DS.DistillConfig(**{**COMMON, **CELLS[cell], "preset": SIZES[size], "max_steps": steps,
                               "warmup": max(1, steps // 10), "eval_every": max(1, steps // 2),
                               "ckpt_every": steps, "seed": seed, "lr": lr, "out_dir": out_dir, "work_dir": work_dir,
                               "data_dir": data_dir, **overrides})


def run_group(work_dir: str, data_dir: str, cell: str, size: str, steps: int, seeds: list, lr: float,
              sweep: bool = False, samples: int = 1000, **overrides) -> list:
    """Train each seed's student (skipping finished ones) and, unless this is the sweep, measure it."""
    done = []
    for seed in seeds:
        out = run_dir(work_dir, size, cell, steps, seed, f"{lr:g}" if sweep else "")
        measured = os.path.join(out, "eval", "measures.json")
        if os.path.isfile(measured if not sweep else os.path.join(out, "ckpt_best.pt")):
            done.append(out)
            continue
        t0 = time.perf_counter()
        DS.train(config(cell, size, steps, seed, lr, out, work_dir, data_dir, **overrides))
        t1 = time.perf_counter()
        line = f"{out}: trained in {t1 - t0:.1f} s"
        if not sweep:
            m = MS.measure_run(out, n=samples, device=torch.device("cpu"))["along"][-1]
            line += (f", measured in {time.perf_counter() - t1:.1f} s: grammatical {100 * m['precision']:.1f}%, "
                     f"KL(p_true||q) {m['recall_kl']:.4f}")
        print(line, flush=True)
        done.append(out)
    return done


def build_caches(work_dir: str, data_dir: str, teachers: int = 1):
    """The exact teacher caches every run reads (windows at offset 0), built once here with all threads, so
    the runs that follow, two at a time, never wait on a build."""
    cfg = DS.resolve_variant(config("fw-2" if teachers == 2 else "fw-1", "d8", 1, 0, 0.1, os.path.join(
        work_dir, "runs", ".cache-probe"), work_dir, data_dir))
    run = Run(cfg)
    paths = [os.path.abspath(p) for p in DS.teacher_paths(cfg)]
    models = [DS.load_teacher(p, run.corpus.tokenizer, run.device) for p in paths]
    DS.TC.open_caches(models, paths, "exact", "fp32", run.corpus.tokenizer.sha, run.corpus.train, cfg.seq_len,
                      cfg.cache_dir, run.device, offset=cfg.window_offset)


def seed_list(text: str) -> list:
    """"0-9" or "0,3,5" -> [0, ..., 9] / [0, 3, 5]."""
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


@guard
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["cache", "run"])
    p.add_argument("--work-dir", default="out")
    p.add_argument("--data-dir", default="out/babylm_synthetic")
    p.add_argument("--teachers", type=int, default=1, choices=[1, 2], help="cache: build for teacher 1, or both")
    p.add_argument("--cell", default="fw-1", help=f"run: one of {', '.join(CELLS)}")
    p.add_argument("--size", default="d8", choices=list(SIZES))
    p.add_argument("--steps", type=int, default=1000, help="run: the budget, a full schedule")
    p.add_argument("--seeds", default="0-2", help="run: e.g. 0-9 or 0,4")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--sweep", action="store_true", help="run: learning-rate sweep runs (no measures)")
    p.add_argument("--samples", type=int, default=1000, help="run: samples per measure")
    p.add_argument("--windows", default="shared", choices=["shared", "random"],
                   help="run: every seed's windows at offset 0 from the cache (shared), or a fresh random offset "
                        "per epoch with the teachers run at every step (random: the windows check)")
    a = p.parse_args(argv)
    keep_freed_memory()  # many small activations a step: a measured gain here (lab/BENCHMARK.md)
    if a.command == "cache":
        return build_caches(a.work_dir, a.data_dir, a.teachers)
    overrides = dict(window_offset=None, fixed_windows=False, teacher_cache="off") if a.windows == "random" else {}
    cell = a.cell + ("-random" if a.windows == "random" else "")
    if a.windows == "random":  # runs/<size>/<cell>-random/...: CELLS knows the cell without the suffix
        CELLS[cell] = CELLS[a.cell]
    run_group(a.work_dir, a.data_dir, cell, a.size, a.steps, seed_list(a.seeds), a.lr, a.sweep, a.samples, **overrides)


if __name__ == "__main__":
    main()
