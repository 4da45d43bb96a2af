"""Score checkpoints as babylm/evaluation-pipeline-2024 does (README "Evaluation"): BLiMP, the BLiMP
supplement and EWoK zero-shot (minimal pairs), and (Super)GLUE by full fine-tuning.

    python evaluate.py out/ChooBaCa-rv-1-24+/ckpt_best.pt --eval-dir ../shared/data/eval
    python evaluate.py CKPT --tasks blimp,supplement,ewok               # zero-shot only
    python evaluate.py CKPT --tasks glue --glue-tasks cola,rte --max-train-examples 512 --max-epochs 2   # CPU

GLUE defaults mirror the pipeline's finetune_model.sh and Trainer: lr 5e-5, batch 64, at most 10 epochs, linear
decay, no warmup, clipping 1.0, patience 3 (threshold 0.001) on the validation set, seed 12, inputs of at most
128 tokens, pairs truncated longest first. Writes results.json,
tables.md and predictions.json.gz (the official submission format) in --out-dir (default: beside the
checkpoint, in eval/). Shape legend: B batch, T time, C = dim, V vocab, L labels.
"""
import argparse
import gzip
import json
import os
import time
import zipfile

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import data as D
import model as M
from cli import guard
from data import read_jsonl
from glue import GLUE, run_glue
from runtime import autocast_ctx, get_device, resolve_precision

PHENOMENA = {"anaphor_agreement": "Anaphor Agr.", "argument_structure": "Arg. Structure", "binding": "Binding",
             "control_raising": "Control/Raising", "determiner_noun_agreement": "Det.-Noun Agr.",
             "ellipsis": "Ellipsis", "filler_gap_dependency": "Filler-Gap", "irregular_forms": "Irregular Forms",
             "island_effects": "Island Effects", "npi_licensing": "NPI Licensing", "quantifiers": "Quantifiers",
             "subject_verb_agreement": "Subj.-Verb Agr."}
SUPPLEMENT = {"hypernym": "Hypernym", "qa_congruence_easy": "QA Congruence (easy)",
              "qa_congruence_tricky": "QA Congruence (tricky)", "subject_aux_inversion": "Subj.-Aux. Inversion",
              "turn_taking": "Turn Taking"}
EWOK = {"social-interactions": "Social interactions", "physical-relations": "Physical relations",
        "spatial-relations": "Spatial relations", "material-properties": "Material properties",
        "agent-properties": "Agent properties", "material-dynamics": "Material dynamics",
        "physical-dynamics": "Physical dynamics", "physical-interactions": "Physical interaction",
        "social-properties": "Social properties", "quantitative-properties": "Quantitative properties",
        "social-relations": "Social relations"}
EWOK_PASSWORD = b"ewok"  # the upstream password of the EWoK terms of use


# ---------------------------------------------------------------------------------------------------------
# data


def require_eval_dir(eval_dir: str):
    if not os.path.isdir(eval_dir):
        raise ValueError(f"evaluation data not found at {eval_dir}: pass --eval-dir (the pipeline's evaluation_data "
                         f"folder, from https://osf.io/ad7qg/) or set BABYLM_EVAL_DIR")


def load_zero_shot(eval_dir: str, tasks: list) -> dict:
    """{"blimp": {uid: rows}, "blimp_supplement": {task: rows}, "ewok": {domain: rows}} for the tasks asked;
    EWoK read from ewok_filtered/ or, in memory, from the password zip (never written out as text)."""
    if not {"blimp", "supplement", "blimp_supplement", "ewok"} & set(tasks):
        return {}
    require_eval_dir(eval_dir)
    out = {}
    for key, folder, names in (("blimp", "blimp_filtered", None), ("blimp_supplement", "supplement_filtered", SUPPLEMENT)):
        if key.replace("blimp_", "") not in tasks and key not in tasks:
            continue
        path = os.path.join(eval_dir, folder)
        if not os.path.isdir(path) or not os.listdir(path):
            raise ValueError(f"{path} is missing or empty: the {key} task needs the pipeline's {folder}/*.jsonl")
        files = sorted(f for f in os.listdir(path) if f.endswith(".jsonl"))
        out[key] = {f[:-6]: read_jsonl(os.path.join(path, f)) for f in files}
    if "ewok" in tasks:
        folder, archive = os.path.join(eval_dir, "ewok_filtered"), os.path.join(eval_dir, "ewok_filtered.zip")
        if os.path.isdir(folder):
            out["ewok"] = {f[:-6]: read_jsonl(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}
        elif os.path.isfile(archive):
            with zipfile.ZipFile(archive) as z:
                out["ewok"] = {os.path.basename(n)[:-6]: [json.loads(line) for line in
                                                          z.read(n, pwd=EWOK_PASSWORD).decode().splitlines() if line]
                               for n in sorted(z.namelist()) if n.endswith(".jsonl")}
        else:
            raise ValueError(f"no EWoK in {eval_dir}: expected ewok_filtered/ or ewok_filtered.zip")
    return out


# ---------------------------------------------------------------------------------------------------------
# zero-shot scoring


@torch.no_grad()
def sequence_logprobs(model, seqs: list, starts: list, device, precision: str, batch_tokens: int = 2048) -> np.ndarray:
    """For each token list s and start i: sum_{j >= i} log p(s[j] | s[:j]), in float64. Sequences are
    sorted by length and right-padded into batches of about `batch_tokens`; causal attention makes the
    padding invisible. The trunk runs in `precision`, the output head and log-softmax in fp32."""
    model.eval()
    order = np.argsort([len(s) for s in seqs], kind="stable")[::-1]
    out = np.zeros(len(seqs))
    max_len = model.config.max_seq_len
    i = 0
    while i < len(order):
        T = min(len(seqs[order[i]]), max_len)
        idx = order[i:i + max(1, batch_tokens // T)]
        x = torch.zeros(len(idx), T, dtype=torch.long)
        y = torch.full((len(idx), T), -100, dtype=torch.long)
        for r, k in enumerate(idx):
            s, cut = seqs[k], max(0, len(seqs[k]) - max_len)  # an over-long item keeps its end
            s, start = s[cut:], max(starts[k] - cut, 1)
            x[r, :len(s)] = torch.tensor(s)
            y[r, start - 1:len(s) - 1] = torch.tensor(s[start:])  # logits at j-1 predict token j
        x, y = x.to(device), y.to(device)
        with autocast_ctx(device, precision):
            h = model.hidden(x)  # (B, T, C)
        scored = y != -100  # the head runs only where a token is scored: no padding, no EWoK context
        logits = F.linear(h[scored].float(), model.output.weight.float())  # (N, V) in fp32
        nll = F.cross_entropy(logits, y[scored], reduction="none").double()  # (N,)
        row = torch.arange(len(idx), device=device).unsqueeze(1).expand_as(y)[scored]
        out[idx] = -torch.zeros(len(idx), dtype=torch.float64, device=device).index_add_(0, row, nll).cpu().numpy()
        i += len(idx)
    return out


def pair_sequences(tok, task: str, rows: list):
    """[(token lists, score-from indices)] for the right and the wrong candidate of every item, and the two
    candidate strings (" " + sentence or target), in that order.
    BLiMP and supplement: BOS + " " + sentence, every token scored. EWoK: no BOS; the target's tokens are
    those of encode(Context1 + " " + Target) past encode(Context1)."""
    if task == "ewok":
        ctx = tok.encode([r["Context1"] for r in rows])
        cands = [[" " + r["Target1"] for r in rows], [" " + r["Target2"] for r in rows]]
        full = [tok.encode([r["Context1"] + c for r, c in zip(rows, cs)]) for cs in cands]
        for f in full:
            for c, s in zip(ctx, f):
                if s[:len(c)] != c:  # SentencePiece splits at spaces, so the context is always a prefix
                    raise ValueError(f"context tokens are not a prefix of context + target ({len(c)} tokens)")
        return [(f, [len(c) for c in ctx]) for f in full], cands
    cands = [[" " + r["sentence_good"] for r in rows], [" " + r["sentence_bad"] for r in rows]]
    return [([[tok.bos_id] + s for s in tok.encode(cs)], [1] * len(rows)) for cs in cands], cands


def zero_shot(model, tok, suites: dict, device, precision: str) -> tuple:
    """Per task accuracy and per-item correctness (good >= bad: ties count as right, as the official
    scorer), plus predictions in the submission format."""
    acc, items, preds = {}, {}, {}
    total = sum(len(rows) for suite in suites.values() for rows in suite.values())
    bar = tqdm(total=total, unit="pair", desc="zero-shot", dynamic_ncols=True)
    for suite, tasks in suites.items():
        for task, rows in tasks.items():
            ((good, good_start), (bad, bad_start)), (good_s, bad_s) = pair_sequences(
                tok, "ewok" if suite == "ewok" else "blimp", rows)
            lp = sequence_logprobs(model, good + bad, good_start + bad_start, device, precision,
                                   batch_tokens=2048 if device.type == "cpu" else 65536)  # a GPU wants big batches
            # ties are right; identical token lists always tie, whatever batch each copy was scored in
            right = (lp[:len(rows)] >= lp[len(rows):]) | np.array([g == b for g, b in zip(good, bad)])
            acc.setdefault(suite, {})[task] = float(right.mean())
            items.setdefault(suite, {})[task] = "".join("1" if r else "0" for r in right)
            preds.setdefault(suite, {})[task] = {"predictions": [
                {"id": f"{task}_{i}", "pred": g if r else b} for i, (g, b, r) in enumerate(zip(good_s, bad_s, right))]}
            bar.update(len(rows))
    bar.close()
    return acc, items, preds


def phenomenon_scores(blimp_rows: dict, blimp_acc: dict) -> dict:
    """The 12 rows of Table 2: paradigms grouped by linguistics_term, s-selection under argument structure."""
    groups = {}
    for uid, rows in blimp_rows.items():
        term = rows[0]["linguistics_term"]
        groups.setdefault("argument_structure" if term == "s-selection" else term, []).append(blimp_acc[uid])
    return {term: float(np.mean(v)) for term, v in sorted(groups.items())}


def summarize(res: dict) -> dict:
    """Benchmark scores (mean over paradigms / tasks / domains) and the macro-average of Table 3."""
    zs, scores = res.get("zero_shot", {}), {}
    for key in ("blimp", "blimp_supplement", "ewok"):
        if key in zs:
            scores[key] = float(np.mean(list(zs[key].values())))
    if res.get("glue"):
        scores["glue"] = float(np.mean([v["score"] for v in res["glue"].values()]))
    if all(k in scores for k in ("blimp", "blimp_supplement", "ewok", "glue")):
        scores["macroaverage"] = float(np.mean([scores[k] for k in ("blimp", "blimp_supplement", "ewok", "glue")]))
    return scores


def table_rows(res: dict) -> list:
    """(benchmark, task name as in the paper's Table 2, percent or None) in the paper's order."""
    rows = [("glue", name, 100 * res["glue"][t]["score"] if t in res.get("glue", {}) else None)
            for t, name in GLUE.items()]
    rows += [("ewok", name, 100 * res["zero_shot"]["ewok"][d] if d in res.get("zero_shot", {}).get("ewok", {}) else None)
             for d, name in EWOK.items()]
    rows += [("blimp", name, 100 * res["phenomena"][t] if t in res.get("phenomena", {}) else None)
             for t, name in PHENOMENA.items()]
    supp = res.get("zero_shot", {}).get("blimp_supplement", {})
    rows += [("blimp_supplement", name, 100 * supp[t] if t in supp else None) for t, name in SUPPLEMENT.items()]
    return rows


def fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def evaluate(ckpt_path: str, args) -> dict:
    device = get_device(args.device)
    model, ckpt = M.load_model(ckpt_path, device)
    tok = D.Tokenizer(args.tokenizer or ckpt.get("tokenizer_path", ""))
    if ckpt.get("tokenizer_sha") not in (None, tok.sha) or model.config.vocab_size != tok.vocab_size:
        raise ValueError(f"tokenizer {tok.path} (vocab {tok.vocab_size}) is not the one {ckpt_path} was trained "
                         f"with (vocab {model.config.vocab_size}): pass the right --tokenizer")
    # fp32 by default, as the official harness scores; bf16 is an explicit speed option (the head and
    # log-softmax are fp32 either way)
    precision = resolve_precision(args.precision, device)
    out_dir = args.out_dir or os.path.join(os.path.dirname(ckpt_path), "eval")
    path, sha = os.path.join(out_dir, "results.json"), D.hash_files([ckpt_path])
    res = {}
    if os.path.isfile(path):  # earlier calls into this folder: merged per task, if they scored this checkpoint
        with open(path) as f:
            res = json.load(f)
        if res.get("checkpoint_sha") != sha:
            res = {"replaced": res.get("model")}
    res.update({"model": ckpt_path, "checkpoint_sha": sha, "params": model.num_params(), "device": str(device),
                "variant": ckpt.get("variant") or ckpt.get("config", {}).get("preset"), "val_loss": ckpt.get("best_val")})
    res.setdefault("time_s", {})
    tasks = [t for t in args.tasks.split(",") if t]
    suites = load_zero_shot(args.eval_dir, tasks)
    if suites:
        t0 = time.time()
        acc, items, preds = zero_shot(model, tok, suites, device, precision)
        for key, value in (("zero_shot", acc), ("items", items), ("predictions", preds)):
            for suite, tasks_ in value.items():
                res.setdefault(key, {}).setdefault(suite, {}).update(tasks_)
        if "blimp" in suites:
            res["phenomena"] = phenomenon_scores(suites["blimp"], acc["blimp"])
        res.setdefault("precision", {})["zero_shot"] = precision
        n = sum(len(r) for s in suites.values() for r in s.values())
        res["time_s"]["zero_shot"] = time.time() - t0
        print(f"zero-shot: {n} items in {time.time() - t0:.0f}s ({n / (time.time() - t0):.0f} pairs/s)")
    if "glue" in tasks:
        t0 = time.time()
        glue_tasks = args.glue_tasks.split(",") if args.glue_tasks else list(GLUE)
        glue, skipped = run_glue(model, tok, args.eval_dir, glue_tasks, device, precision, args.max_train_examples,
                                 args.max_epochs)
        res.setdefault("items", {})["glue"] = {t: v.pop("right") for t, v in glue.items()}
        res.setdefault("predictions", {})["glue"] = {t: {"predictions": [{"id": f"{t}_{i}", "pred": p} for i, p in
                                                                          enumerate(v.pop("pred"))]} for t, v in glue.items()}
        res["glue"], res["glue_skipped"] = glue, skipped
        res["glue_recipe"] = {"max_train_examples": args.max_train_examples, "max_epochs": args.max_epochs,
                              "tasks": args.glue_tasks}
        res.setdefault("precision", {})["glue"] = precision
        res["time_s"]["glue"] = time.time() - t0
    res["scores"] = summarize(res)
    res["departures"] = departures(res)  # reads the scores: after them
    write_outputs(res, out_dir)
    return res


def departures(res: dict) -> list:
    """How what this folder holds departs from the official recipe: capped GLUE, skipped or missing tasks
    (the official collector rejects a predictions file without all of them), precision other than fp32."""
    recipe, out = res.get("glue_recipe", {}), []
    out += [f"GLUE trained on at most {recipe['max_train_examples']} examples per task"] if recipe.get(
        "max_train_examples") else []
    out += [f"GLUE fine-tuning capped at {recipe['max_epochs']} epochs"] if recipe.get("max_epochs", 10) != 10 else []
    out += [f"GLUE tasks limited to {recipe['tasks']}"] if recipe.get("tasks") else []
    out += [f"GLUE tasks skipped: {', '.join(sorted(res['glue_skipped']))}"] if res.get("glue_skipped") else []
    out += [f"{part} scored in {p} (the official harness runs fp32)" for part, p in res.get("precision", {}).items()
            if p != "fp32"]
    missing = [b for b in ("blimp", "blimp_supplement", "ewok", "glue") if b not in res.get("scores", {})]
    out += [f"not evaluated: {', '.join(missing)} (the official collector would reject predictions.json.gz)"] \
        if missing else []
    return out


def write_outputs(res: dict, out_dir: str):
    """results.json (without predictions), tables.md, predictions.json.gz; each via a temp file."""
    os.makedirs(out_dir, exist_ok=True)
    preds = res.pop("predictions", {})
    old = os.path.join(out_dir, "predictions.json.gz")
    merged = {}  # a later call on the same checkpoint adds, never drops, tasks; another checkpoint starts afresh
    if os.path.isfile(old) and "replaced" not in res:
        with gzip.open(old) as f:
            merged = json.load(f)
    for suite, tasks in preds.items():
        merged.setdefault(suite, {}).update(tasks)
    meta = {"model": res["model"], "checkpoint_sha": res["checkpoint_sha"], "departures": res["departures"],
            "tasks": {suite: sorted(tasks) for suite, tasks in merged.items()}}
    body = {"results.json": json.dumps(res, indent=1).encode(),
            "predictions.json.gz": gzip.compress(json.dumps(merged).encode()),
            "predictions.meta.json": json.dumps(meta, indent=1).encode()}
    s = res["scores"]
    md = [f"# {res['variant']} ({res['params']:,} params, {res['model']})", "",
          "| benchmark | task | score |", "|---|---|---|"]
    md += [f"| {b} | {name} | {fmt(v)} |" for b, name, v in table_rows(res)]
    md += ["", "| BLiMP | BLiMP suppl. | EWoK | GLUE | Macro |", "|---|---|---|---|---|",
           "| " + " | ".join(fmt(100 * s[k] if k in s else None)
                            for k in ("blimp", "blimp_supplement", "ewok", "glue", "macroaverage")) + " |"]
    md += [f"\nDepartures from the official recipe: {'; '.join(res['departures'])}."] if res.get("departures") else []
    body["tables.md"] = ("\n".join(md) + "\n").encode()
    for name, blob in body.items():
        M.atomic_write(os.path.join(out_dir, name), blob)
    res["predictions"] = preds


TASKS = ("blimp", "supplement", "ewok", "glue")


def check_tasks(args):
    """Unknown --tasks or --glue-tasks names, and a missing evaluation folder, refused before any work."""
    bad = [t for t in args.tasks.split(",") if t not in TASKS]
    if bad or not args.tasks:
        raise ValueError(f"unknown --tasks {','.join(bad) or repr(args.tasks)}: use a comma-separated subset of "
                         f"{', '.join(TASKS)}")
    bad = [t for t in args.glue_tasks.split(",") if t and t not in GLUE]
    if bad:
        raise ValueError(f"unknown --glue-tasks {','.join(bad)}: use a comma-separated subset of {', '.join(GLUE)}")
    require_eval_dir(args.eval_dir)
    for ckpt in args.checkpoints:
        if not os.path.isfile(ckpt):
            raise ValueError(f"checkpoint {ckpt} not found: train it first or check the path")


@guard
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="checkpoint files (ckpt_best.pt of a run, or any saved model)")
    p.add_argument("--eval-dir", default=os.environ.get("BABYLM_EVAL_DIR", os.path.join("data", "evaluation_data")),
                   help="the pipeline's evaluation_data folder (default: $BABYLM_EVAL_DIR, else data/evaluation_data)")
    p.add_argument("--tasks", default="blimp,supplement,ewok,glue",
                   help="comma-separated subset of blimp, supplement, ewok, glue (default: all four)")
    p.add_argument("--glue-tasks", default="", help=f"comma-separated subset of {', '.join(GLUE)} (default: all 11)")
    p.add_argument("--max-train-examples", type=int, default=0, help="GLUE training subset per task (default 0: all)")
    p.add_argument("--max-epochs", type=int, default=10, help="GLUE epochs at most (default 10)")
    p.add_argument("--out-dir", default="", help="default: <checkpoint folder>/eval")
    p.add_argument("--tokenizer", default="", help="default: the one recorded in the checkpoint")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "auto"],
                   help="trunk precision (default fp32, as the official harness); the output head is always fp32")
    args = p.parse_args(argv)
    check_tasks(args)
    for ckpt in args.checkpoints:
        evaluate(ckpt, args)
        with open(os.path.join(args.out_dir or os.path.join(os.path.dirname(ckpt), "eval"), "tables.md")) as f:
            print(f.read())


if __name__ == "__main__":
    main()
