"""Distil the 58M Baby Llama student from one or two teachers (README "Distillation"): forward or reverse KL
(eqs. 4-5, reduced as eq. 1), teacher-student logit mixing (eq. 2), MiniLLM's single-step term, the
step-wise (chunked) loss and the progressive lambda schedule (eq. 3); total loss eq. 9.

    python distill.py --variant ChooBaCa-rv-1-syn+ --preset debug --teacher1-preset debug --data synthetic --max-steps 20
    python distill.py --objective rv --teachers 1 --data 2024            # ChooBaCa-rv-1-24 (paper, GPU)
    python distill.py --objective rv --teachers 2 --data 2024 --plus     # ChooBaCa-rv-2-24+
    torchrun --nproc_per_node 4 distill.py --variant ChooBaCa-fw-2-23

Teachers are found as <work_dir>/teacher-<teacher1_preset|teacher2_preset>-<data>/ckpt_best.pt, or given
with --teacher-ckpt. Shape legend: B batch, T time, C = dim, V vocab, P prompt length.
"""
import os
import re
from dataclasses import dataclass
from typing import Optional

import torch

import model as M
import teacher_cache as TC
from cli import guard, opt, parse_config
from losses import OBJECTIVES, alternate_objective, combine_teachers, cross_entropy, kd_loss, lambda_schedule, mix_logits
from parallel import SAMPLER_STREAM, gather_objects, rank_seed
from runtime import autocast_ctx, resolve_precision
from training import Run, TrainConfig, next_token_targets

OBJECTIVE_NAMES = [*OBJECTIVES, "alternate"]  # losses.OBJECTIVES, and forward/reverse KL taking turns
DATA_TAG = {"2023": "23", "2024": "24", "synthetic": "syn"}
# ChooBaCa-rv-1-24+ (Table 1's names), or the short rv-1+ with --data; rvavg: reverse KL on averaged teachers
VARIANT_RE = re.compile(rf"^(?:ChooBaCa-)?({'|'.join(OBJECTIVE_NAMES)}|rvavg)-([12])(?:-({'|'.join(DATA_TAG.values())}))?(\+?)$")
PRESETS = list(M.PRESETS)


@dataclass
class DistillConfig(TrainConfig):
    """TrainConfig with the student's defaults (README "Distillation") and the distillation fields."""
    # the student's values where they differ from the teacher's
    preset: str = opt("baby-llama-58m", "student preset (model.py PRESETS)", PRESETS)
    out_dir: Optional[str] = opt(None, "run folder (None: <work_dir>/<variant>, and -s<seed> for seeds but 0)")
    epochs: int = opt(6, "epochs over the training windows")
    batch_size: int = opt(32, "sequences per optimizer step, all processes together")
    lr: Optional[float] = opt(2.5e-4, "peak learning rate")
    warmup: int = opt(200, "linear warmup steps, then cosine to min_lr")
    weight_decay: float = opt(0.1, "AdamW weight decay on matrices only")
    # which variant
    variant: Optional[str] = opt(None, "e.g. ChooBaCa-rv-1-24+ (sets objective, teachers, data and plus) or rv-1+ "
                                       "(the same, the data set from its own flag)")
    objective: str = opt("fw", "fw, rv (the paper), or beyond it: hybrid, alternate, sfkl, srkl", OBJECTIVE_NAMES)
    teachers: int = opt(1, "how many teachers: 1 (the llama) or 2 (llama and gpt2)", [1, 2])
    plus: bool = opt(False, "the '+' variants: step-wise loss and progressive schedule, no single step")
    mixing: Optional[bool] = opt(None, "mix teacher and student logits, eq. 2 (None: as Table 1 says)")
    single_step: Optional[bool] = opt(None, "MiniLLM's single-step term on sampled text (None: as Table 1 says)")
    progressive: Optional[bool] = opt(None, "eq. 3 schedule of lambda (None: as Table 1 says)")
    chunk_size: Optional[int] = opt(None, "step-wise chunk k (None: 32 for '+' variants, else 0 = whole sequence)")
    # the loss (eqs. 1-3, 9)
    lam: float = opt(0.9, "constant mixing coefficient of eq. 2 when the schedule is off")
    lam0: float = opt(0.9, "eq. 3: lambda at the first epoch")
    lam_min: float = opt(0.3, "eq. 3: lambda's floor")
    alpha: float = opt(0.5, "eq. 9: weight of the cross-entropy")
    temperature: float = opt(2.0, "distillation temperature T")
    kd_norm: str = opt("tokens", "tokens: mean over B*T positions (eq. 1); batch: Baby Llama's divide-by-B",
                       ["tokens", "batch"])
    teacher_combine: Optional[str] = opt(None, "two teachers: logits (one averaged target) or kl (mean of the "
                                               "KLs); None: logits for fw, kl otherwise", ["logits", "kl", None])
    rv_weight: float = opt(0.5, "hybrid: w reverse + (1 - w) forward")
    skew: float = opt(0.1, "sfkl / srkl: the skew of the mixture (Ko et al., 2024)")
    alternate_by: str = opt("step", "alternate: switch forward/reverse by step or by epoch", ["step", "epoch"])
    alternate_period: int = opt(1, "alternate: steps (or epochs) per objective")
    prompt_len: Optional[int] = opt(None, "single step: corpus prompt, the rest sampled (None: seq_len / 2)")
    sample_from: str = opt("mix", "single step: sample the continuation from eq. 2's mixture of teachers and "
                                  "student (mix, the paper's) or from the student alone (student: on-policy)",
                           ["mix", "student"])
    fused_loss: bool = opt(False, "the hand-derived gradient path of losses.py (the same value and gradient; "
                                  "faster at large vocabularies, lab/BENCHMARK.md)")
    # the teachers
    teacher_ckpt: Optional[list] = opt(None, "teacher checkpoint paths, overriding the presets' convention")
    teacher1_preset: str = opt("llama-360m", "preset of teacher 1", PRESETS)
    teacher2_preset: str = opt("gpt2-705m", "preset of teacher 2", PRESETS)
    teacher_cache: str = opt("off", "read the teachers' targets from a cache built once per data set "
                                    "(docs/teacher_cache.md): exact (hidden states) or compact (top-k logits); fixes the "
                                    "windows unless they are turned off (no-fixed-windows: one cache per epoch's offset); "
                                    "single-step variants still run the teachers", TC.FORMS)
    cache_topk: int = opt(64, "compact cache: logits kept per position")
    cache_dir: Optional[str] = opt(None, "folder of the teacher caches (None: <work_dir>/teacher-cache)")

    def validate(self):
        super().validate()
        for name in ("lam", "lam0", "lam_min", "alpha", "rv_weight", "skew"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: must lie in [0, 1]")
        if self.temperature <= 0 or self.alternate_period < 1:
            raise ValueError("--temperature must be positive and --alternate-period at least 1")
        if self.cache_topk < 1:
            raise ValueError(f"--cache-topk {self.cache_topk}: must be at least 1")
        if self.chunk_size is not None and self.chunk_size < 0:
            raise ValueError(f"--chunk-size {self.chunk_size}: must be 0 (whole sequence) or positive")


def variant_name(objective: str, teachers: int, data: str, plus: bool) -> str:
    return f"ChooBaCa-{objective}-{teachers}-{DATA_TAG.get(data, data)}{'+' if plus else ''}"


def resolve_variant(cfg: DistillConfig) -> DistillConfig:
    """Validate, then fill the technique switches from Table 1 (README "The twelve variants"); explicit flags win."""
    if cfg.variant:
        m = VARIANT_RE.match(cfg.variant)
        if not m:
            raise ValueError(f"unknown variant {cfg.variant!r}: expected ChooBaCa-{{fw|rv}}-{{1|2}}-{{23|24|syn}}[+] "
                             f"or {{fw|rv}}-{{1|2}}[+], e.g. ChooBaCa-rv-1-24+ or rv-1+")
        cfg.objective, cfg.teachers, cfg.plus = m.group(1), int(m.group(2)), m.group(4) == "+"
        if cfg.objective == "rvavg":  # reverse KL against the averaged teachers (the paper's future work)
            cfg.objective, cfg.teacher_combine = "rv", "logits"
        if m.group(3):
            cfg.data = {v: k for k, v in DATA_TAG.items()}[m.group(3)]
    cfg.validate()
    if cfg.plus and cfg.objective == "fw":
        raise ValueError("the '+' variants are reverse-KL only (Table 1): use --objective rv with --plus")
    rv = cfg.objective == "rv"
    cfg.teacher_combine = cfg.teacher_combine or ("logits" if cfg.objective == "fw" else "kl")
    averaged = cfg.objective != "fw" and cfg.teachers == 2 and cfg.teacher_combine == "logits"  # beyond the paper
    cfg.variant = variant_name(cfg.objective + ("avg" if averaged else ""), cfg.teachers, cfg.data, cfg.plus)
    cfg.mixing = (rv or cfg.plus) if cfg.mixing is None else cfg.mixing
    cfg.single_step = (rv and not cfg.plus) if cfg.single_step is None else cfg.single_step
    cfg.progressive = cfg.plus if cfg.progressive is None else cfg.progressive
    cfg.chunk_size = (32 if cfg.plus else 0) if cfg.chunk_size is None else cfg.chunk_size
    if cfg.single_step and cfg.chunk_size:
        raise ValueError("single step and step-wise chunks together are not implemented (no Table 1 variant "
                         "uses both): pass --chunk-size 0 or --no-single-step")
    cfg.prompt_len = cfg.prompt_len or cfg.seq_len // 2
    if cfg.single_step and not 0 < cfg.prompt_len < cfg.seq_len:
        raise ValueError(f"--prompt-len {cfg.prompt_len} must lie inside the sequence of {cfg.seq_len}")
    cfg.out_dir = cfg.out_dir or os.path.join(cfg.work_dir, cfg.variant + (f"-s{cfg.seed}" if cfg.seed else ""))
    cfg.cache_dir = cfg.cache_dir or os.path.join(cfg.work_dir, "teacher-cache")
    if cfg.fixed_windows is None:  # with a cache, one set of windows (one cache) unless random ones are asked for
        cfg.fixed_windows = cfg.teacher_cache != "off"
    return cfg


def lambda_for_epoch(cfg: DistillConfig, epoch: int) -> float:
    """Mixing coefficient of eq. 2 for this epoch: 1 (pure teacher) without mixing, eq. 3 when progressive."""
    if not cfg.mixing:
        return 1.0
    return lambda_schedule(epoch, cfg.epochs, cfg.lam0, cfg.lam_min) if cfg.progressive else cfg.lam


def schedule_epoch(step: int, total: int, epochs: int) -> int:
    """The epoch of eq. 3 at this step: the real epoch for a full run; when --max-steps cuts the run short,
    the steps taken are split into `epochs` equal parts, so the schedule still runs its whole course."""
    return min(epochs - 1, step * epochs // total)


def teacher_paths(cfg: DistillConfig) -> list:
    if cfg.teacher_ckpt:
        if len(cfg.teacher_ckpt) != cfg.teachers:
            raise ValueError(f"{cfg.teachers} teacher(s) asked for but {len(cfg.teacher_ckpt)} --teacher-ckpt "
                             f"path(s) given")
        return list(cfg.teacher_ckpt)
    paths = []
    for preset in [cfg.teacher1_preset, cfg.teacher2_preset][:cfg.teachers]:
        path = os.path.join(cfg.work_dir, f"teacher-{preset}-{cfg.data}", "ckpt_best.pt")
        if not os.path.isfile(path):
            raise ValueError(f"no {preset} teacher at {path}: train it first with `python train_teacher.py "
                             f"--preset {preset} --data {cfg.data} --work-dir {cfg.work_dir}` or pass --teacher-ckpt")
        paths.append(path)
    return paths


def load_teacher(path: str, tok, device) -> M.Transformer:
    """A frozen teacher in eval mode; refused when it was trained with another tokenizer."""
    teacher, ckpt = M.load_model(path, device)
    if ckpt.get("tokenizer_sha") != tok.sha or teacher.config.vocab_size != tok.vocab_size:
        raise ValueError(f"teacher {path} was trained with another tokenizer (vocab {teacher.config.vocab_size}, "
                         f"sha {str(ckpt.get('tokenizer_sha'))[:8]}) than this student's (vocab {tok.vocab_size}, "
                         f"sha {tok.sha[:8]}): retrain the teacher on the same --data/--vocab-size")
    return teacher.eval().requires_grad_(False)


COMPUTE_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


def teachers_in_compute_dtype(teachers: list, precision: str) -> list:
    """Frozen teachers stored in the compute dtype when training in bf16 or fp16: under autocast their fp32
    weights would be re-cast at every call (autocast caches casts only for weights that require grad)."""
    return [t.to(COMPUTE_DTYPE[precision]) for t in teachers] if precision in COMPUTE_DTYPE else teachers


def restore_sampler(generator: torch.Generator, saved, device, rank: int, world: int, seed: int, step: int) -> bool:
    """The single-step sampler's stream of this rank from a checkpoint; one written on another device type
    or by another number of processes reseeds it from (seed, step, rank) instead (a CPU generator's state
    does not fit a CUDA one), and False is returned."""
    if isinstance(saved, dict) and saved.get("device") == device.type and len(saved["states"]) == world:
        generator.set_state(saved["states"][rank])
        return True
    generator.manual_seed(rank_seed(seed, rank, SAMPLER_STREAM, step))
    return False


def sample_single_step(student, teachers, x, cfg: DistillConfig, lam: float, generator=None, sampler=None):
    """MiniLLM's single-step sequences: the prompt x[:, :P] continued for T - P tokens sampled from
    softmax(z_mix), z_mix = eq. 2 applied to the combined teachers (--sample-from student: the student's
    own logits, on-policy). Returns (sequences (b, T), each teacher's logits (b, T - P, V) at positions
    P-1 .. T-2): the predictions of the sampled tokens, which the sampler computed to draw them and which
    are exactly the KD term's targets; None with --sample-from student, whose sampling needs no teacher (they
    score the finished text in one teacher-forced pass instead of stepping with the sampler). `sampler`, when
    given, is a model in the compute dtype that receives the student's current weights (autocast would
    otherwise re-cast every weight at each of the T - P decoding steps)."""
    T, P = x.shape[1], cfg.prompt_len
    mix = lambda zs: mix_logits(combine_teachers(zs[1:]), zs[0], lam)  # noqa: E731 (zs[0] is the student)
    if sampler is not None:
        sampler.load_state_dict(student.state_dict())  # this step's weights, cast once
    if cfg.sample_from == "student":  # the teachers do not steer the sampling: they score the text afterwards
        with autocast_ctx(x.device, cfg.precision):
            return M.generate(sampler or student, x[:, :P], T - P, generator=generator), None
    with autocast_ctx(x.device, cfg.precision):
        seq, seen = M.generate([sampler or student, *teachers], x[:, :P], T - P, mix=mix, generator=generator,
                               return_logits=True)  # (b, T), each (b, T - P, V)
    return seq, seen[1:]


class Logits:
    """Teacher logits already computed (the single-step sampler's), with the interface of TC.Hidden."""

    def __init__(self, z: torch.Tensor):
        self.z = z

    def logits(self, teacher, s: int, e: int, student: torch.Tensor = None) -> torch.Tensor:
        return self.z[:, s:e]


def distill_micro_step(student, teachers, x, cfg: DistillConfig, lam: float, backward_scale, generator=None,
                       sampler=None, objective: str = None, targets_cached: list = None):
    """Forward and backward of eq. 9, L = alpha CE + (1 - alpha) L_KD, on one micro-batch x (b, T); returns
    (CE, KD) as detached 0-d tensors (no host sync here: the loop syncs once per optimizer step).

    The student's trunk runs once; the output head, the teachers' heads and the loss run chunk by chunk
    (k = chunk_size, or the whole sequence), each chunk normalised by the whole micro-batch's counts and
    back-propagated at once into a detached copy of the hidden states, whose gradient then flows through
    the trunk in one backward. Value and gradients equal the unchunked loss; only one chunk's (b, k, V)
    logits exist at a time. `backward_scale(loss)` applies 1/grad_accum and the fp16 loss scale.
    With single step, the KD term is computed on sample_single_step's sequences at the T - P positions that
    predict sampled tokens, against the teacher logits the sampler computed (the numbers running the teachers
    on the sampled text gives, to float rounding: tested); CE stays on x.
    `targets_cached`: the teachers' targets of x read from a teacher cache (TC.Hidden or TC.TopK each),
    in place of running the teachers.
    """
    b, T = x.shape
    targets = next_token_targets(x)  # (b, T)
    kd_x, kd_lo, kd_hi = x, 0, T  # the KD term's text and the positions it counts
    if cfg.single_step:
        assert targets_cached is None, "the single-step term runs the teachers on sampled text"
        kd_x, sampled = sample_single_step(student, teachers, x, cfg, lam, generator, sampler)
        kd_lo, kd_hi = cfg.prompt_len - 1, T - 1  # logits at P-1 .. T-2 predict the sampled tokens
        targets_cached = None if sampled is None else [Logits(z) for z in sampled]
    n_ce = (targets != -100).sum()
    n_kd = b if cfg.kd_norm == "batch" else b * (kd_hi - kd_lo)
    with autocast_ctx(x.device, cfg.precision):
        h = student.hidden(x if kd_x is x else torch.cat([x, kd_x]))  # (b or 2b, T, C)
        if targets_cached is None:
            with torch.no_grad():
                targets_cached = [TC.Hidden(t.hidden(kd_x)[:, kd_lo:kd_hi]) for t in teachers]  # (b, ., C_t)
    h_detached = h.detach().requires_grad_()
    h_ce, h_kd = h_detached[:b], h_detached[b:, kd_lo:kd_hi] if kd_x is not x else None
    k = cfg.chunk_size or T
    ce_total = kd_total = torch.zeros((), device=x.device)
    for s in range(0, T, k):
        # .contiguous(): a strided slice sends a CPU bf16 matmul down a path 77 times slower
        with autocast_ctx(x.device, cfg.precision):
            z_ce = student.head(h_ce[:, s:s + k].contiguous())  # (b, k, V)
            z_kd = z_ce if h_kd is None else student.head(h_kd[:, s:s + k].contiguous())  # single step: (b, T - P, V)
            with torch.no_grad():
                z_teachers = [tt.logits(t, s, s + k, z_kd) for t, tt in zip(teachers, targets_cached)]  # like z_kd
        ce = cross_entropy(z_ce, targets[:, s:s + k], normalizer=n_ce, fused=cfg.fused_loss)  # eq. 10
        kd = kd_loss(z_kd, z_teachers, objective or cfg.objective, cfg.temperature, lam, cfg.teacher_combine, None,
                     n_kd, fused=cfg.fused_loss, rv_weight=cfg.rv_weight, skew=cfg.skew)  # eqs. 1-5
        backward_scale(cfg.alpha * ce + (1 - cfg.alpha) * kd).backward()
        ce_total, kd_total = ce_total + ce.detach().float(), kd_total + kd.detach().float()
    h.backward(h_detached.grad)  # the trunk's backward, once
    return ce_total, kd_total


def train(cfg: DistillConfig) -> dict:
    cfg = resolve_variant(cfg)  # validated, before any file is written
    run = Run(cfg)
    paths = [os.path.abspath(p) for p in teacher_paths(cfg)]
    teachers = [load_teacher(p, run.corpus.tokenizer, run.device) for p in paths]  # refused: no run folder
    vocab = run.corpus.tokenizer.vocab_size
    student = M.build_model(M.get_config(cfg.preset, vocab_size=vocab), seed=cfg.seed).to(run.device)
    cfg.precision = resolve_precision(cfg.precision, run.device, student.config.dim)
    teachers = teachers_in_compute_dtype(teachers, cfg.precision)
    generator = torch.Generator(device=run.device).manual_seed(rank_seed(cfg.seed, run.rank, SAMPLER_STREAM))
    sampler = None  # single step in bf16/fp16: the student's weights cast once per step (sample_single_step)
    if cfg.precision in COMPUTE_DTYPE and cfg.single_step:
        sampler = M.build_model(student.config).to(run.device, COMPUTE_DTYPE[cfg.precision]).eval()
    use_cache = cfg.teacher_cache != "off" and not cfg.single_step  # single step: the teachers see sampled text

    def open_caches(offset: int) -> list:  # the teachers' targets of the windows at this offset, built on first use
        return TC.open_caches(teachers, paths, cfg.teacher_cache, cfg.precision, run.corpus.tokenizer.sha,
                              run.corpus.train, cfg.seq_len, cfg.cache_dir, run.device, cfg.cache_topk, cfg.temperature,
                              run.rank, run.world, offset=offset)
    cache_offset = run.batches.offset(0) if use_cache else None  # before the progress bar; fixed windows: the only one
    caches = open_caches(cache_offset) if use_cache else None
    chunks = -(-cfg.seq_len // (cfg.chunk_size or cfg.seq_len))  # backward passes reaching the head per micro-batch
    run.start(student, cfg.lr, cfg.precision, accumulations={student.output.weight: chunks},
              extra=lambda: {"sampler_rng": {"device": run.device.type,  # every rank's, gathered (a collective)
                                             "states": gather_objects(generator.get_state(), run.world)},
                             "variant": cfg.variant, "teacher_paths": paths},
              snapshot={"variant": cfg.variant, "teacher_paths": paths})
    if run.resumed:
        restore_sampler(generator, run.resumed.get("sampler_rng"), run.device, run.rank, run.world, cfg.seed, run.step)
    if cfg.compile:  # the trunk is what is worth compiling; heads and losses run per chunk
        student.hidden = torch.compile(student.hidden)
    if run.rank == 0:
        print(f"{cfg.variant}: student {cfg.preset} {student.num_params():,} params, teachers "
              f"{[t.config.arch + ':' + str(t.num_params()) for t in teachers]} | {cfg.objective} KL, mixing "
              f"{cfg.mixing}, single step {cfg.single_step}, chunk {cfg.chunk_size}, progressive {cfg.progressive}, "
              f"teacher cache {cfg.teacher_cache if use_cache else 'off'}, fixed windows {cfg.fixed_windows} | "
              f"{cfg.precision} on {run.device} | {run.total} steps of {cfg.batch_size}x{cfg.seq_len} | out {cfg.out_dir}")
    for epoch, windows, batch in run.steps():
        if use_cache and run.batches.offset(epoch) != cache_offset:  # random windows: each epoch's own cache
            cache_offset = run.batches.offset(epoch)
            caches = open_caches(cache_offset)
        at = schedule_epoch(run.step, run.total, cfg.epochs)  # eq. 3's epoch, also for runs cut by --max-steps
        lam = lambda_for_epoch(cfg, at)
        objective = (alternate_objective(run.step, at, cfg.alternate_period, cfg.alternate_by)
                     if cfg.objective == "alternate" else cfg.objective)
        ce_sum = kd_sum = 0.0
        for ids, x in run.micro_batches(windows, batch):  # gradient accumulation
            cached = [c.fetch(ids, run.device) for c in caches] if caches else None
            ce, kd = distill_micro_step(student, teachers, x, cfg, lam, lambda loss: run.scaler.scale(loss / run.accum),
                                        generator, sampler, objective, cached)
            ce_sum, kd_sum = ce_sum + ce, kd_sum + kd
        run.end_step(epoch, loss=cfg.alpha * ce_sum + (1 - cfg.alpha) * kd_sum, ce=ce_sum, kd=kd_sum, lam=lam,
                     objective=objective)  # eq. 9
    return {**run.close(), "variant": cfg.variant}


@guard
def main(argv=None):
    summary = train(parse_config(DistillConfig, argv, __doc__))
    print(f"done: {summary}")


if __name__ == "__main__":
    main()
