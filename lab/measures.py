"""Is the student mode-seeking? Measures beyond the paper's downstream scores (lab/README.md): per-token
diagnostics against the teacher on the dev set, sample diversity, and, on the synthetic language whose
probabilities are exact, precision and recall against the true distribution and sequence-level KLs in
both directions.

    python -m lab.measures out/ChooBaCa-rv-1-24+/ckpt_best.pt                 # diagnostics against teacher 1
    python -m lab.measures out/ChooBaCa-rv-1-syn+ --sequences --eval-dir out/syn/evaluation_data   # along training

Shape legend: N positions, B batch, T time, V vocab.
"""
import argparse
import json
import os
import re

import numpy as np
import torch
import torch.nn.functional as F

import data as D
import distill as DS
import model as M
from cli import guard
from evaluate import load_zero_shot, sequence_logprobs, zero_shot
from lab import grammar as G
from losses import kl_per_position
from runtime import autocast_ctx, get_device
from training import configure_optimizer

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


# ---------------------------------------------------------------------------------------------------------
# sequence level, against the teacher and (synthetic language) against the true distribution. A "sentence"
# is what a model emits after BOS up to and including EOS, at most `max_len` tokens; one that hits the cap
# counts as not grammatical. |x| is its number of tokens after BOS, EOS included. Temperature 1 throughout.


def sample_sentences(model, n: int, tok, device, seed: int, max_len: int = 64, batch: int = 500) -> list:
    """n token lists sampled from BOS at temperature 1, each cut after its first EOS (or at max_len)."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for lo in range(0, n, batch):
        prompt = torch.full((min(batch, n - lo), 1), tok.bos_id, dtype=torch.long, device=device)
        rows = M.generate(model, prompt, max_len, generator=g, stop_token=tok.eos_id)[:, 1:].tolist()
        out += [r[:r.index(tok.eos_id) + 1] if tok.eos_id in r else r for r in rows]
    return out


def sentence_logprobs(model, sents: list, tok, device) -> np.ndarray:
    """log q(x) of each token list after BOS (float64), scored as evaluate.py scores minimal pairs."""
    return sequence_logprobs(model, [[tok.bos_id] + s for s in sents], [1] * len(sents), device, "fp32")


def reference_sets(teacher, tok, pcfg, device, n: int = 1000, seed: int = 0) -> dict:
    """What every student is compared with: teacher samples with their teacher log-probs (for KL(p_T || q)),
    and held-out sentences from the grammar with their exact log-probs (for recall)."""
    t_samples = sample_sentences(teacher, n, tok, device, seed=10_000 + seed)
    true = [G.detokenize(ws) for ws, _ in pcfg.sample(np.random.default_rng(20_000 + seed), n)]
    true_ids = [s + [tok.eos_id] for s in tok.encode(true)]
    return {"teacher_samples": t_samples, "teacher_lp": sentence_logprobs(teacher, t_samples, tok, device),
            "true": true_ids, "true_lp": pcfg.logprob(true)}


def cached_reference_sets(teacher, teacher_path: str, tok, pcfg, device, n: int = 1000, seed: int = 0) -> dict:
    """reference_sets computed once per teacher checkpoint and stored beside it,
    <teacher dir>/eval/reference-<teacher sha>-n<n>-s<seed>.json; a file whose recorded key (teacher and
    tokenizer hashes, n, seed) differs from this call's is refused, as the teacher cache refuses one."""
    key = {"teacher_sha": D.hash_files([teacher_path]), "tokenizer_sha": tok.sha, "n": n, "seed": seed}
    path = os.path.join(os.path.dirname(os.path.abspath(teacher_path)), "eval",
                        f"reference-{key['teacher_sha'][:12]}-n{n}-s{seed}.json")
    if os.path.isfile(path):
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"unreadable reference sets {path} ({e}): delete it to recompute") from None
        if saved.get("key") != key:
            raise ValueError(f"reference sets {path} were made for {saved.get('key')}, not {key}: delete it to "
                             f"recompute")
        return {k: np.array(v) if k.endswith("_lp") else v for k, v in saved["sets"].items()}
    ref = reference_sets(teacher, tok, pcfg, device, n, seed)
    write_json({"key": key, "sets": {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in ref.items()}},
               path)
    return ref


def grammatical(sents: list, tok, pcfg) -> tuple:
    """(is grammatical (bool array), exact log p_true, -inf where not) of sampled token lists."""
    done = np.array([bool(s) and s[-1] == tok.eos_id for s in sents])
    lp = pcfg.logprob([tok.decode(s[:-1]) if d else "" for s, d in zip(sents, done)])
    return np.isfinite(lp), lp  # an unfinished sample was scored as "", which the grammar cannot produce


def sequence_measures(student, teacher, tok, pcfg, ref: dict, device, n: int = 1000, seed: int = 0) -> dict:
    """Per-item arrays (for intervals) of every sequence-level measure of README "Mode seeking, measured"."""
    sents = sample_sentences(student, n, tok, device, seed)
    length = np.array([max(1, len(s)) for s in sents], dtype=float)
    lq, lp_t = sentence_logprobs(student, sents, tok, device), sentence_logprobs(teacher, sents, tok, device)
    out = {"reverse_kl": (lq - lp_t) / length, "entropy": -lq / length}
    t_len = np.array([len(s) for s in ref["teacher_samples"]], dtype=float)
    out["forward_kl"] = (ref["teacher_lp"] - sentence_logprobs(student, ref["teacher_samples"], tok, device)) / t_len
    if pcfg is not None:
        ok, lp_true = grammatical(sents, tok, pcfg)
        out["precision"] = ok.astype(float)
        out["true_logp"] = np.where(ok, lp_true / length, np.nan)  # over the grammatical samples only
        true_len = np.array([len(s) for s in ref["true"]], dtype=float)
        out["recall_kl"] = (ref["true_lp"] - sentence_logprobs(student, ref["true"], tok, device)) / true_len
    out["distinct_2"] = np.array([distinct_n(sents, 2)])
    return out


# ---------------------------------------------------------------------------------------------------------
# positive control: a case whose answer is known before it runs. A teacher whose next-token distribution
# after each token c has two modes, c + 1 and c + V/2, and a student with a 2-dimensional hidden state, which
# cannot put two separated peaks after every token; trained through distill.py's own step (pure KD, T = 1).
# Reverse KL must then pick modes (higher precision: student mass on the teacher's modes) and give up on
# covering them (higher KL(p_T || q)) compared with forward KL.


class TableTeacher(torch.nn.Module):
    """A fixed next-token table (V, V) as a model with distill.py's interface: hidden(x) is one-hot, head
    applies the table of logits."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.output = torch.nn.Linear(logits.shape[0], logits.shape[1], bias=False)
        with torch.no_grad():
            self.output.weight.copy_(logits.t())

    def hidden(self, x):
        return F.one_hot(x, self.output.in_features).float()  # (B, T, V)

    def head(self, h):
        return self.output(h)


def bimodal_table(V: int = 16, mode_mass: float = 0.49) -> torch.Tensor:
    p = torch.full((V, V), (1 - 2 * mode_mass) / (V - 2))
    c = torch.arange(V)
    p[c, (c + 1) % V] = mode_mass
    p[c, (c + V // 2) % V] = mode_mass
    return p.log()


def positive_control(objective: str, seed: int = 0, steps: int = 300, V: int = 16) -> dict:
    """Train the 2-d student against the bimodal table with `objective` (fw or rv); return its precision
    (mean mass on the teacher's two modes) and KL(p_T || q), KL(q || p_T) averaged over the V contexts."""
    torch.manual_seed(seed)
    table = bimodal_table(V)
    teacher = TableTeacher(table).eval().requires_grad_(False)
    student = M.build_model(M.ModelConfig("llama", dim=2, n_layers=1, n_heads=1, n_kv_heads=1, hidden_dim=2,
                                          vocab_size=V, max_seq_len=16), seed=seed)
    cfg = DS.resolve_variant(DS.DistillConfig(objective=objective, mixing=False, single_step=False, chunk_size=0,
                                              alpha=0.0, temperature=1.0, precision="fp32", preset="debug"))
    opt = configure_optimizer(student, 0.05, 0.0, torch.device("cpu"))
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randint(0, V, (32, 16), generator=g)
        DS.distill_micro_step(student, [teacher], x, cfg, 1.0, lambda loss: loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        zq = student(torch.arange(V).unsqueeze(0))[0]  # (V contexts, V)
    modes = table.exp() > 0.1
    return {"precision": float((zq.softmax(-1) * modes).sum(-1).mean()),
            "forward_kl": float(kl_per_position(table, zq).mean()), "reverse_kl": float(kl_per_position(zq, table).mean())}


def snapshots(run_dir: str) -> list:
    """The run's checkpoints along training, ckpt_step<N>.pt by step (distill.py --keep-every), else the best."""
    steps = sorted((int(re.match(r"ckpt_step(\d+)\.pt$", f).group(1)), f) for f in os.listdir(run_dir)
                   if re.match(r"ckpt_step(\d+)\.pt$", f))
    if steps:
        return [(s, os.path.join(run_dir, f)) for s, f in steps]
    best = os.path.join(run_dir, "ckpt_best.pt")
    if not os.path.isfile(best):
        raise ValueError(f"no checkpoint in {run_dir}: train it first")
    return [(M.read_checkpoint(best).get("step", 0), best)]


def measure_run(run_dir: str, teacher_path: str = "", eval_dir: str = "", n: int = 1000, device="cpu") -> dict:
    """Every sequence-level measure at each snapshot of a run (means), with the per-item arrays of the last
    one for intervals; against teacher 1 and, on the synthetic language, the grammar. Written to
    <run>/eval/measures.json."""
    points = snapshots(run_dir)
    student, ckpt = M.load_model(points[-1][1], device)
    tok = D.Tokenizer(ckpt["tokenizer_path"])
    teacher_path = teacher_path or (ckpt.get("teacher_paths") or [points[-1][1]])[0]
    teacher = M.load_model(teacher_path, device)[0].eval()
    synthetic = ckpt.get("config", {}).get("data") == "synthetic"
    pcfg = G.PCFG() if synthetic else None
    ref = cached_reference_sets(teacher, teacher_path, tok, pcfg, device, n) if synthetic else {
        "teacher_samples": (t := sample_sentences(teacher, n, tok, device, 10_000)),
        "teacher_lp": sentence_logprobs(teacher, t, tok, device)}
    suites = load_zero_shot(eval_dir, ["blimp"]) if eval_dir else {}
    out = {"run": run_dir, "teacher": teacher_path, "n": n, "params": student.num_params(), "along": []}
    for step, path in points:
        model = M.load_model(path, device)[0].eval()
        items = sequence_measures(model, teacher, tok, pcfg, ref, device, n)
        row = {"step": step, **{k: float(np.nanmean(v)) for k, v in items.items()}}
        if suites:
            acc = zero_shot(model, tok, suites, device, "fp32")[0]["blimp"]
            row["minimal_pairs"] = float(np.mean(list(acc.values())))
        out["along"].append(row)
    out["final"] = {k: [None if np.isnan(x) else round(float(x), 6) for x in v] for k, v in items.items()}
    if synthetic:  # the true language's own numbers, for scale: entropy per token of held-out sentences
        true_len = np.array([len(s) for s in ref["true"]], dtype=float)
        out["true_entropy"] = float(-ref["true_lp"].sum() / true_len.sum())
    write_json(out, os.path.join(run_dir, "eval", "measures.json"))
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
    M.atomic_write(path, json.dumps(obj, indent=1).encode())


@guard
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="a student checkpoint (per-token diagnostics on the dev set), or with "
                                  "--sequences a run folder (sequence-level measures at every snapshot)")
    p.add_argument("--sequences", action="store_true", help="sequence-level measures of a run folder")
    p.add_argument("--control", action="store_true", help="the positive control, 3 seeds of fw and rv, "
                                                          "written to the JSON file `target`")
    p.add_argument("--teacher", default="", help="teacher checkpoint (default: the student's first teacher)")
    p.add_argument("--eval-dir", default="", help="--sequences: also the minimal pairs of <eval-dir>/blimp_filtered")
    p.add_argument("--samples", type=int, default=1000, help="--sequences: samples per measure (default 1000)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="default fp32")
    a = p.parse_args(argv)
    if a.control:
        out = {o: [positive_control(o, seed) for seed in range(3)] for o in ("fw", "rv")}
        write_json(out, a.target)
        print(json.dumps(out))
    elif a.sequences:
        out = measure_run(a.target, a.teacher, a.eval_dir, a.samples, get_device(a.device))
        print(" ".join(f"{k} {v:.4f}" for k, v in out["along"][-1].items() if k != "step"))
    else:
        out = diagnose(a.target, a.teacher, get_device(a.device), a.precision)
        print("diagnostics: " + ", ".join(f"{k} {v:.4f}" for k, v in out["diagnostics"].items()))


if __name__ == "__main__":
    main()
