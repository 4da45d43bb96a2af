"""Is the student mode-seeking? Measures beyond the paper's downstream scores (README "Mode seeking,
measured"): per-token diagnostics against the teacher on the dev set, sample diversity, and, on the
synthetic language whose probabilities are exact, precision and recall against the true distribution
and sequence-level KLs in both directions.

    python measures.py out/ChooBaCa-rv-1-24+/ckpt_best.pt                     # diagnostics against teacher 1

Shape legend: N positions, B batch, T time, V vocab.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

import data as D
import model as M
from losses import kl_per_position
from runtime import autocast_ctx, get_device



def distribution_stats(student_logits, teacher_logits, k: int = 10) -> dict:
    """Per position (N,): the student's entropy, top-1 agreement with the teacher, the student's mass on
    the teacher's top-k tokens, forward KL(p_T || q_S) and reverse KL(q_S || p_T), at temperature 1."""
    ls = F.log_softmax(student_logits.float(), -1)  # (N, V)
    lt = F.log_softmax(teacher_logits.float(), -1)
    qs = ls.exp()
    return {"entropy": -(qs * ls).sum(-1), "teacher_entropy": -(lt.exp() * lt).sum(-1),
            "top1_agreement": (student_logits.argmax(-1) == teacher_logits.argmax(-1)).float(),
            f"mass_on_teacher_top{k}": qs.gather(-1, teacher_logits.topk(k, -1).indices).sum(-1),
            "forward_kl": kl_per_position(teacher_logits, student_logits),  # eq. 4 per position, T = 1
            "reverse_kl": kl_per_position(student_logits, teacher_logits)}  # eq. 5


def distinct_n(seqs: list, n: int) -> float:
    """Unique n-grams over all n-grams, pooled over the samples."""
    grams = [tuple(s[i:i + n]) for s in seqs for i in range(len(s) - n + 1)]
    return len(set(grams)) / max(1, len(grams))


def repetition_rate(seqs: list, n: int = 4) -> float:
    """Mean over samples of the share of n-grams that already occurred earlier in the same sample."""
    rates = []
    for s in seqs:
        grams = [tuple(s[i:i + n]) for i in range(len(s) - n + 1)]
        rates.append(1 - len(set(grams)) / len(grams) if grams else 0.0)
    return float(np.mean(rates))


@torch.no_grad()
def diagnostics(student, teacher, dev_tokens, device, precision, n_seqs: int = 256, k: int = 10,
                n_prompts: int = 64, prompt_len: int = 16, gen_len: int = 64, seed: int = 0) -> dict:
    """Means of distribution_stats over the fixed dev subset, and distinct-1/2 and repetition of samples
    (temperature 1) continuing seeded dev prompts."""
    student.eval(), teacher.eval()
    val = D.val_sequences(dev_tokens, 128, n_seqs)
    sums = {}
    for i in range(0, len(val), 16):
        x = val[i:i + 16].to(device)
        with autocast_ctx(device, precision):
            zs, zt = student(x), teacher(x)
        for name, v in distribution_stats(zs.flatten(0, 1), zt.flatten(0, 1), k).items():
            sums[name] = sums.get(name, 0.0) + v.double().sum().item()
    out = {name: v / val.numel() for name, v in sums.items()}
    g = torch.Generator(device=device).manual_seed(seed)
    prompts = val[torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))[:n_prompts], :prompt_len]
    with autocast_ctx(device, precision):
        samples = M.generate(student, prompts.to(device), gen_len, generator=g)[:, prompt_len:].tolist()
    out.update(distinct_1=distinct_n(samples, 1), distinct_2=distinct_n(samples, 2),
               repetition_4=repetition_rate(samples, 4))
    return out


def diagnose(ckpt_path: str, teacher_path: str = "", device="cpu", precision: str = "fp32") -> dict:
    """diagnostics() of a student checkpoint against its first teacher (or `teacher_path`), written to
    <run>/eval/measures.json beside evaluate.py's results.json."""
    student, ckpt = M.load_model(ckpt_path, device)
    teacher_path = teacher_path or (ckpt.get("teacher_paths") or [""])[0]
    if not teacher_path:
        raise ValueError(f"{ckpt_path} names no teacher: pass --teacher")
    teacher, _ = M.load_model(teacher_path, device)
    cfg = ckpt.get("config", {})
    corpus = D.prepare(cfg.get("data", "2024"), cfg.get("data_dir"), student.config.vocab_size,
                       cfg.get("work_dir", "out"), cfg.get("separator", "none"))
    out = {"diagnostics": diagnostics(student, teacher, corpus.dev, device, precision), "teacher": teacher_path}
    write_json(out, os.path.join(os.path.dirname(ckpt_path), "eval", "measures.json"))
    return out


def write_json(obj, path: str):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a student checkpoint written by distill.py")
    p.add_argument("--teacher", default="", help="teacher checkpoint (default: the student's first teacher)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="default fp32")
    a = p.parse_args(argv)
    try:
        out = diagnose(a.checkpoint, a.teacher, get_device(a.device), a.precision)
        print("diagnostics: " + ", ".join(f"{k} {v:.4f}" for k, v in out["diagnostics"].items()))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
