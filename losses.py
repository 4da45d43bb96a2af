"""The distillation objectives of the paper (README "Distillation"), as pure functions of logits, one
function per equation: mixing (eq. 2), the progressive schedule (eq. 3), forward and reverse KL (eqs. 4-5),
reduced as eq. 1 by `kd_reduce`, the one place where T^2 is applied; the teacher combination; eq. 9's KD
term in `kd_loss`. Training backpropagates through these functions. `OBJECTIVES` is the one table of
objectives: a new one is a function here and a line there.

An opt-in speed path (`fused=True`, distill.py --fused-loss) computes forward and reverse KL and the
cross-entropy block by block with a hand-derived gradient: the same value and gradient (tested), faster
where the vocabulary is large (lab/BENCHMARK.md), slower at the synthetic language's 105 words.

Shapes: logits (B, T, V), mask (B, T) bool (True = counted), targets (B, T) int64.
Reduction (eq. 1): T^2 * sum over counted positions of the per-position KL (summed over the vocabulary),
divided by the number of counted positions, or by `normalizer` when given: the step-wise loss passes the
whole sequence's count to every chunk so the chunks add up to the unchunked value, and `--kd-norm batch`
passes B (Baby Llama's `batchmean`).
Everything is computed in fp32 (fp64 for fp64 inputs) from log_softmax; probabilities are exponentiated
log-probabilities.
"""
import inspect
from typing import Optional, Sequence

import torch
import torch.nn.functional as F


def _acc(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs (gradcheck)


def kd_reduce(per_position: torch.Tensor, temperature: float, mask: Optional[torch.Tensor] = None,
              normalizer=None) -> torch.Tensor:
    """Eq. 1: T^2 * the mean of a per-position divergence (B, T) over the counted positions."""
    if mask is not None:
        per_position = per_position.masked_fill(~mask, 0.0)  # masked_fill, not *, so a NaN there cannot leak
    count = normalizer if normalizer is not None else (mask.sum() if mask is not None else per_position.numel())
    return temperature ** 2 * per_position.sum() / count


def combine_teachers(teacher_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Several teachers as one target: the mean of their raw logits (Baby Llama's forward KL)."""
    if len(teacher_logits) == 1:
        return teacher_logits[0]
    return torch.stack([t.to(_acc(t)) for t in teacher_logits]).mean(0)


def mix_logits(teacher_logits, student_logits, lam: float):
    """Eq. 2: z_mix = lam z_T + (1 - lam) stopgrad(z_S). The target is a constant of the step."""
    if lam == 1.0:
        return teacher_logits
    acc = _acc(teacher_logits)
    return lam * teacher_logits.to(acc) + (1.0 - lam) * student_logits.detach().to(acc)


def lambda_schedule(epoch: int, epochs: int, lam0: float = 0.9, lam_min: float = 0.3) -> float:
    """Eq. 3: lambda_e = max(lam0 (1 - e / E), lam_min) at the start of 0-based epoch e of E."""
    return max(lam0 * (1.0 - epoch / epochs), lam_min)


def kl_per_position(p_logits: torch.Tensor, q_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(p || q) = sum_v p (log p - log q) at every position, (B, T), with p, q = softmax(logits / T)."""
    log_p = F.log_softmax(p_logits.to(_acc(p_logits)) / temperature, dim=-1)  # (B, T, V)
    log_q = F.log_softmax(q_logits.to(_acc(q_logits)) / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def forward_kl(student_logits, teacher_logits, temperature: float = 1.0, mask=None, normalizer=None):
    """Eq. 4: T^2 * mean KL(p_T || q_S) = sum_v p_T (log p_T - log q_S). Mass-covering."""
    return kd_reduce(kl_per_position(teacher_logits, student_logits, temperature), temperature, mask, normalizer)


def reverse_kl(student_logits, teacher_logits, temperature: float = 1.0, mask=None, normalizer=None):
    """Eq. 5: T^2 * mean KL(q_S || p_T) = sum_v q_S (log q_S - log p_T). Mode-seeking."""
    return kd_reduce(kl_per_position(student_logits, teacher_logits, temperature), temperature, mask, normalizer)


def skew_kl(student_logits, teacher_logits, temperature: float = 1.0, mask=None, normalizer=None,
            skew: float = 0.1, reverse: bool = False):
    """Skew KL (Ko et al., 2024, DistiLLM): forward KL(p || s p + (1 - s) q), or with reverse=True
    KL(q || s q + (1 - s) p); the mixture is taken in probability space. s = 0 gives the plain KLs."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (B, T, V)
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    a, b = (log_q, log_p) if reverse else (log_p, log_q)  # KL(a || s a + (1 - s) b)
    log_m = torch.logaddexp(a + torch.log(torch.tensor(skew)), b + torch.log(torch.tensor(1.0 - skew))) \
        if skew > 0 else b
    per_position = (a.exp() * (a - log_m)).sum(-1)
    return kd_reduce(per_position, temperature, mask, normalizer)


def skew_forward_kl(student_logits, teacher_logits, temperature=1.0, mask=None, normalizer=None, skew=0.1):
    return skew_kl(student_logits, teacher_logits, temperature, mask, normalizer, skew, reverse=False)


def skew_reverse_kl(student_logits, teacher_logits, temperature=1.0, mask=None, normalizer=None, skew=0.1):
    return skew_kl(student_logits, teacher_logits, temperature, mask, normalizer, skew, reverse=True)


def hybrid_kl(student_logits, teacher_logits, temperature=1.0, mask=None, normalizer=None, rv_weight=0.5):
    """w reverse + (1 - w) forward KL."""
    return (rv_weight * reverse_kl(student_logits, teacher_logits, temperature, mask, normalizer)
            + (1 - rv_weight) * forward_kl(student_logits, teacher_logits, temperature, mask, normalizer))


def alternate_objective(step: int, epoch: int, period: int = 1, by: str = "step") -> str:
    """"alternate": forward KL for `period` steps (or epochs), then reverse KL for as many, and so on."""
    unit = step if by == "step" else epoch
    return "fw" if (unit // period) % 2 == 0 else "rv"


# The objectives: the paper's two, then beyond it. Each takes (student logits, target logits, T, mask,
# normalizer) and the options it names (kd_loss passes each objective only its own).
OBJECTIVES = {"fw": forward_kl, "rv": reverse_kl, "hybrid": hybrid_kl, "sfkl": skew_forward_kl,
              "srkl": skew_reverse_kl}


# ---------------------------------------------------------------------------------------------------------
# The fused speed path (opt-in): the same numbers as the definitions above, computed a block of rows at a time
# with the gradient written in the forward pass (no (N, V) intermediates kept for autograd). Vocabulary-wide
# softmaxes are memory-bound; a block of rows stays in cache, so each logit is read from memory once.
# Gradients, with a = z_S / T and b = target / T:
#   forward KL(p || q): d/dz_S = (q - p) / T;   reverse KL(q || p): d/dz_S = q (log q - log p - KL) / T;
#   cross-entropy: d/dz = softmax(z) - onehot(y).

BLOCK_ELEMS = 1 << 17  # CPU: elements per block at least, 512 KB in fp32 (the floor is 64 rows)


def block_rows(x: torch.Tensor) -> int:
    """Rows per block: on a CPU at least 64 rows and BLOCK_ELEMS elements (64 rows of a 16000 vocabulary, 256
    of a 512 one): a block stays in cache, and each op over it is large enough that per-op overhead matters
    less. On a GPU a Python loop over small blocks would cost a
    kernel launch per block, so blocks are thousands of rows."""
    return max(64, BLOCK_ELEMS // x.shape[-1]) if x.device.type == "cpu" else 4096


class _FusedKD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student, lam, temperature, reverse, combine_logits, *teachers):
        """student (N, V), teachers each (N, V) -> per-row divergence (N,) fp32, averaged over targets; with
        combine_logits one target, the teachers combined block by block (no (N, V) copy of their mean)."""
        acc = _acc(student)
        out = torch.empty(student.shape[0], dtype=acc, device=student.device)
        # the gradient stays in fp32 until backward has applied the loss scale: an fp16 copy would flush
        # small gradients to zero before the GradScaler's factor could lift them
        grad = torch.empty(student.shape, dtype=acc, device=student.device)
        ctx.dtype, rows = student.dtype, block_rows(student)
        for s in range(0, student.shape[0], rows):
            zs = student[s:s + rows].to(acc)
            a = zs / temperature
            log_q = a - torch.logsumexp(a, -1, keepdim=True)  # log_softmax
            q = log_q.exp()
            blocks = [t[s:s + rows].to(acc) for t in teachers]
            targets = [combine_teachers(blocks)] if combine_logits else blocks
            kl_sum, g_sum = 0.0, 0.0
            for t in targets:
                b = mix_logits(t, zs, lam) / temperature  # eq. 2, a constant
                log_p = b - torch.logsumexp(b, -1, keepdim=True)
                if reverse:
                    d = log_q - log_p
                    kl = (q * d).sum(-1)
                    g = q * (d - kl.unsqueeze(-1))
                else:
                    p = log_p.exp()
                    kl = (p * (log_p - log_q)).sum(-1)
                    g = q - p
                kl_sum, g_sum = kl_sum + kl, g_sum + g
            out[s:s + rows] = kl_sum / len(targets)
            grad[s:s + rows] = g_sum / (len(targets) * temperature)
        ctx.save_for_backward(grad)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        grad, = ctx.saved_tensors
        g = (grad * grad_out.unsqueeze(-1).to(grad.dtype)).to(ctx.dtype)
        return g, None, None, None, None, *[None] * len(ctx.needs_input_grad[5:])


class _FusedCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, ignore_index):
        """logits (N, V), targets (N,) -> per-row -log softmax(z)[y] (N,) fp32, 0 where ignored."""
        acc = _acc(logits)
        out = torch.zeros(logits.shape[0], dtype=acc, device=logits.device)
        grad = torch.empty(logits.shape, dtype=acc, device=logits.device)  # fp32 until the loss scale: see _FusedKD
        ctx.dtype, rows = logits.dtype, block_rows(logits)
        for s in range(0, logits.shape[0], rows):
            z, y = logits[s:s + rows].to(acc), targets[s:s + rows]
            keep = y != ignore_index
            log_q = z - torch.logsumexp(z, -1, keepdim=True)
            y_safe = y.clamp(min=0).unsqueeze(-1)
            out[s:s + rows] = -log_q.gather(-1, y_safe).squeeze(-1) * keep
            g = log_q.exp().scatter_add_(-1, y_safe, -torch.ones_like(y_safe, dtype=z.dtype))
            grad[s:s + rows] = g * keep.unsqueeze(-1)
        ctx.save_for_backward(grad)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        grad, = ctx.saved_tensors
        return (grad * grad_out.unsqueeze(-1).to(grad.dtype)).to(ctx.dtype), None, None


def cross_entropy(logits, targets, ignore_index: int = -100, normalizer=None, fused: bool = False):
    """Eq. 10: mean over positions whose target is not `ignore_index` of -log q_S(target), in fp32. With
    `fused` (and gradients on), the same value and gradient block by block (_FusedCE)."""
    if fused and torch.is_grad_enabled() and logits.requires_grad:  # the fused path writes a gradient
        total = _FusedCE.apply(logits.flatten(0, 1), targets.flatten(), ignore_index).sum()
    else:
        total = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=ignore_index,
                                reduction="sum")
    count = normalizer if normalizer is not None else (targets != ignore_index).sum().clamp(min=1)
    return total / count


def kd_loss(student_logits, teacher_logits: Sequence[torch.Tensor], objective: str, temperature: float = 2.0,
            lam: float = 1.0, combine: str = "kl", mask=None, normalizer=None, fused: bool = False, **options):
    """L_KD against one or more teachers: OBJECTIVES[objective] against each target, averaged.

    combine="logits": one target, the mean of the teachers' raw logits (Baby Llama's forward KL).
    combine="kl": the mean over teachers of the divergence to each teacher (the paper's reverse KL).
    Each target is mixed with the student's detached logits by `lam` (eq. 2; lam = 1 is no mixing).
    `options` (rv_weight, skew) reach the objectives that name them. fused=True computes fw and rv with
    the hand-derived gradient block by block (_FusedKD): the same value and gradient.
    """
    if combine not in ("kl", "logits"):
        raise ValueError(f"unknown teacher combination {combine!r}: use kl or logits")
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    if fused and objective in ("fw", "rv") and torch.is_grad_enabled() and student_logits.requires_grad:
        B, T, V = student_logits.shape  # the fused path writes a gradient, and combines teachers block by block
        per_position = _FusedKD.apply(student_logits.reshape(B * T, V), lam, temperature, objective == "rv",
                                      combine == "logits", *[t.reshape(B * T, V) for t in teacher_logits])
        return kd_reduce(per_position.view(B, T), temperature, mask, normalizer)
    fn = OBJECTIVES[objective]
    own = {k: v for k, v in options.items() if k in inspect.signature(fn).parameters}
    targets = [combine_teachers(teacher_logits)] if combine == "logits" else list(teacher_logits)
    losses = [fn(student_logits, mix_logits(t, student_logits, lam), temperature, mask, normalizer, **own)
              for t in targets]
    return sum(losses) / len(losses)
