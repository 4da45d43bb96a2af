"""Score checkpoints as babylm/evaluation-pipeline-2024 does (SPEC.md section 6): BLiMP, the BLiMP
supplement and EWoK zero-shot (minimal pairs), and (Super)GLUE by full fine-tuning.

    python evaluate.py out/ChooBaCa-rv-1-24+/ckpt_best.pt --eval-dir ../shared/data/eval
    python evaluate.py CKPT --tasks blimp,supplement,ewok               # zero-shot only
    python evaluate.py CKPT --tasks glue --glue-tasks cola,rte --max-train-examples 512 --max-epochs 2   # CPU

GLUE defaults mirror the pipeline's finetune_model.sh: lr 5e-5, batch 64, at most 10 epochs, linear decay,
no warmup, patience 3 on the validation set, seed 12, inputs truncated to 128 tokens. Writes results.json,
tables.md and predictions.json.gz (the official submission format) in --out-dir (default: beside the
checkpoint, in eval/). Shape legend: B batch, T time, C = dim, V vocab, L labels.
"""
import argparse
import copy
import gzip
import json
import os
import sys
import time
import zipfile

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import data as D
import model as M
from train_teacher import autocast_ctx, get_device, resolve_precision, set_seed

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
GLUE = {"cola": "CoLA (MCC)", "sst2": "SST-2", "mrpc": "MRPC (F1)", "qqp": "QQP (F1)", "mnli": "MNLI",
        "mnli-mm": "MNLI-mm", "qnli": "QNLI", "rte": "RTE", "boolq": "BoolQ", "multirc": "MultiRC", "wsc": "WSC"}
GLUE_METRIC = {"cola": "mcc", "mrpc": "f1", "qqp": "f1"}  # accuracy otherwise
EWOK_PASSWORD = b"ewok"  # the upstream password of the EWoK terms of use


# ---------------------------------------------------------------------------------------------------------
# data


def read_jsonl(path: str) -> list:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_zero_shot(eval_dir: str, tasks: list) -> dict:
    """{"blimp": {uid: rows}, "blimp_supplement": {task: rows}, "ewok": {domain: rows}} for the tasks asked;
    EWoK read from ewok_filtered/ or, in memory, from the password zip (never written out as text)."""
    if not {"blimp", "supplement", "blimp_supplement", "ewok"} & set(tasks):
        return {}
    if not os.path.isdir(eval_dir):
        raise ValueError(f"evaluation folder {eval_dir!r} not found: pass --eval-dir or set BABYLM_EVAL_DIR "
                         f"(the pipeline's evaluation_data, from https://osf.io/ad7qg/)")
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
            lp = sequence_logprobs(model, good + bad, good_start + bad_start, device, precision)
            right = lp[:len(rows)] >= lp[len(rows):]
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


# ---------------------------------------------------------------------------------------------------------
# (Super)GLUE


def glue_text(task: str, row: dict) -> tuple:
    """The (first, second) input strings of an example; second is None for single-sentence tasks."""
    if task in ("cola", "sst2"):
        return row["sentence"], None
    if task == "multirc":
        return f"Question: {row['question']} Answer: {row['answer']}", row["paragraph"]
    if task == "wsc":
        return f'Does "{row["span2_text"]}" refer to "{row["span1_text"]}" in this passage?', row["text"]
    a, b = {"mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2"), "qqp": ("question1", "question2"),
            "mnli": ("premise", "hypothesis"), "mnli-mm": ("premise", "hypothesis"), "qnli": ("question", "sentence"),
            "boolq": ("question", "passage")}[task]
    return row[a], row[b]


def encode_examples(tok, task: str, rows: list, max_len: int = 128) -> list:
    """BOS + first [+ EOS + second], right-truncated to max_len tokens."""
    out = []
    for row in rows:
        a, b = glue_text(task, row)
        ids = [tok.bos_id] + tok.encode(a) + ([tok.eos_id] + tok.encode(b) if b is not None else [])
        out.append(ids[:max_len])
    return out


def accuracy(y_true, y_pred) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def f1_binary(y_true, y_pred) -> float:
    """F1 of the positive class 1."""
    t, p = np.asarray(y_true) == 1, np.asarray(y_pred) == 1
    tp, fp, fn = np.sum(t & p), np.sum(~t & p), np.sum(t & ~p)
    return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0


def mcc(y_true, y_pred) -> float:
    """Matthews correlation, binary; 0 when a row or column of the confusion matrix is empty."""
    t, p = np.asarray(y_true) == 1, np.asarray(y_pred) == 1
    tp, tn, fp, fn = (float(np.sum(a & b)) for a, b in ((t, p), (~t, ~p), (~t, p), (t, ~p)))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denom) if denom else 0.0


METRICS = {"accuracy": accuracy, "f1": f1_binary, "mcc": mcc}


class Classifier(torch.nn.Module):
    """The pretrained model plus a fresh linear head (no bias) on the hidden state of the last non-pad token."""

    def __init__(self, backbone: M.Transformer, n_labels: int, seed: int):
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(backbone.config.dim, n_labels, bias=False)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g) * 0.02)

    def forward(self, x, lengths):
        h = self.backbone.hidden(x)  # (B, T, C); right padding is invisible to earlier positions
        return self.head(h[torch.arange(len(x)), lengths - 1])  # (B, L)


def _batches(seqs, labels, batch_size, order):
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        T = max(len(seqs[k]) for k in idx)
        x = torch.zeros(len(idx), T, dtype=torch.long)
        for r, k in enumerate(idx):
            x[r, :len(seqs[k])] = torch.tensor(seqs[k])
        yield x, torch.tensor([len(seqs[k]) for k in idx]), torch.tensor([labels[k] for k in idx])


@torch.no_grad()
def predict(clf, seqs, device, precision, batch_size=64) -> np.ndarray:
    clf.eval()
    preds = []
    for x, n, _ in _batches(seqs, [0] * len(seqs), batch_size, list(range(len(seqs)))):
        with autocast_ctx(device, precision):
            preds.append(clf(x.to(device), n.to(device)).argmax(-1).cpu())
    return torch.cat(preds).numpy()


def finetune(backbone, tok, task: str, train_rows, valid_sets: dict, device, precision, lr=5e-5, batch_size=64,
             max_epochs=10, patience=3, seed=12) -> dict:
    """Full fine-tuning; after each epoch, score the validation set; keep the best epoch (by F1, by accuracy
    for MNLI) and stop after `patience` epochs without improvement. valid_sets: {name: rows}, the first one
    selects the epoch (MNLI-mm rides along with MNLI)."""
    set_seed(seed)
    labels = [r["label"] for r in train_rows]
    clf = Classifier(copy.deepcopy(backbone), 3 if task == "mnli" else 2, seed).to(device)
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=0.0)
    seqs = encode_examples(tok, task, train_rows)
    valid = {name: (encode_examples(tok, task, rows), [r["label"] for r in rows]) for name, rows in valid_sets.items()}
    select = "accuracy" if task == "mnli" else "f1"
    steps_per_epoch = -(-len(seqs) // batch_size)
    total, step, best, bad_epochs, history = steps_per_epoch * max_epochs, 0, None, 0, []
    g = torch.Generator().manual_seed(seed)
    for epoch in range(max_epochs):
        clf.train()
        for x, n, y in _batches(seqs, labels, batch_size, torch.randperm(len(seqs), generator=g).tolist()):
            for group in opt.param_groups:  # linear decay to 0, no warmup
                group["lr"] = lr * (1 - step / total)
            with autocast_ctx(device, precision):
                loss = F.cross_entropy(clf(x.to(device), n.to(device)).float(), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        scores = {}
        for name, (vs, vy) in valid.items():
            p = predict(clf, vs, device, precision)
            scores[name] = {"accuracy": accuracy(vy, p), "f1": f1_binary(vy, p), "mcc": mcc(vy, p), "pred": p}
        first = scores[next(iter(valid))]
        history.append({"epoch": epoch, "loss": loss.item(), select: first[select]})
        if best is None or first[select] > best[0][next(iter(valid))][select]:
            best, bad_epochs = (scores, epoch), 0
        else:
            bad_epochs += 1
            if bad_epochs >= patience:
                break
    scores, epoch = best
    return {name: {"score": s[GLUE_METRIC.get(name, "accuracy")], "metric": GLUE_METRIC.get(name, "accuracy"),
                   "best_epoch": epoch, "pred": s["pred"].tolist(), "right": "".join(
                       "1" if a == b else "0" for a, b in zip(s["pred"], valid[name][1])),
                   "history": history, "n_train": len(train_rows)} for name, s in scores.items()}


def run_glue(backbone, tok, eval_dir: str, tasks: list, device, precision, max_train: int = 0, max_epochs: int = 10):
    """Fine-tune every task asked; a task without a training file is skipped and says so."""
    results, skipped = {}, {}
    folder = os.path.join(eval_dir, "glue_filtered")
    for task in [t for t in tasks if t != "mnli-mm"]:
        valid_path = os.path.join(folder, f"{task}.valid.jsonl")
        if not os.path.isfile(valid_path):
            raise ValueError(f"{valid_path} is missing: the evaluation folder lacks the {task} task; restore the "
                             f"pipeline's glue_filtered/ or leave {task} out of --glue-tasks")
        train_path = os.path.join(folder, f"{task}.train.jsonl")
        if not os.path.isfile(train_path):
            skipped[task] = "no training file"
            if task == "mnli":
                skipped["mnli-mm"] = "no training file (uses MNLI's)"
            continue
        train = read_jsonl(train_path)
        if max_train and len(train) > max_train:
            idx = np.random.default_rng(12).permutation(len(train))[:max_train]
            train = [train[i] for i in sorted(idx)]
        valid = {task: read_jsonl(valid_path)}
        if task == "mnli" and "mnli-mm" in tasks:
            valid["mnli-mm"] = read_jsonl(os.path.join(folder, "mnli-mm.valid.jsonl"))
        t0 = time.time()
        results.update(finetune(backbone, tok, task, train, valid, device, precision, max_epochs=max_epochs))
        print(f"glue {task}: " + ", ".join(f"{k} {v['metric']} {100 * v['score']:.1f}" for k, v in results.items()
                                           if k in valid) + f" ({len(train)} train, {time.time() - t0:.0f}s)")
    return results, skipped


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
    # auto: a bf16 trunk on a CPU too, for speed (the head and log-softmax are fp32 either way)
    precision = "bf16" if args.precision == "auto" and device.type == "cpu" else resolve_precision(args.precision, device)
    out_dir = args.out_dir or os.path.join(os.path.dirname(ckpt_path), "eval")
    path = os.path.join(out_dir, "results.json")
    res = json.load(open(path)) if os.path.isfile(path) else {}
    res.update({"model": ckpt_path, "variant": ckpt.get("variant") or ckpt.get("config", {}).get("preset"),
                "params": model.num_params(), "val_loss": ckpt.get("best_val"), "device": str(device),
                "precision": precision})
    res.setdefault("time_s", {})
    tasks = [t for t in args.tasks.split(",") if t]
    if args.diagnostics:
        cfg = ckpt.get("config", {})
        teacher_path = args.teacher or (ckpt.get("teacher_paths") or [""])[0]
        if not teacher_path and "teacher1" in cfg:  # older checkpoints: the teacher by distill.py's convention
            import distill
            teacher_path = distill.teacher_paths(distill.DistillConfig(**cfg))[0]
        if not teacher_path:
            raise ValueError(f"{ckpt_path} names no teacher: pass --teacher for --diagnostics")
        teacher, _ = M.load_model(teacher_path, device)
        corpus = D.prepare(cfg.get("data", "2024"), cfg.get("data_dir") or None, tok.vocab_size,
                           cfg.get("work_dir", "out"), cfg.get("separator", "none"))
        res["diagnostics"] = diagnostics(model, teacher, corpus.dev, device, precision)
        print("diagnostics: " + ", ".join(f"{k} {v:.4f}" for k, v in res["diagnostics"].items()))
    suites = load_zero_shot(args.eval_dir, tasks)
    if suites:
        t0 = time.time()
        acc, items, preds = zero_shot(model, tok, suites, device, precision)
        res["zero_shot"], res["predictions"] = acc, preds
        res.setdefault("items", {}).update(items)
        if "blimp" in suites:
            res["phenomena"] = phenomenon_scores(suites["blimp"], acc["blimp"])
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
        res["departures"] = [d for d in (
            f"GLUE trained on at most {args.max_train_examples} examples per task" if args.max_train_examples else "",
            f"GLUE fine-tuning capped at {args.max_epochs} epochs" if args.max_epochs != 10 else "",
            f"GLUE tasks limited to {args.glue_tasks}" if args.glue_tasks else "",
            f"GLUE tasks skipped: {', '.join(sorted(skipped))}" if skipped else "") if d]
        res["time_s"]["glue"] = time.time() - t0
    res["scores"] = summarize(res)
    write_outputs(res, out_dir)
    return res


def write_outputs(res: dict, out_dir: str):
    """results.json (without predictions), tables.md, predictions.json.gz; each via a temp file."""
    os.makedirs(out_dir, exist_ok=True)
    preds = res.pop("predictions", {})
    old = os.path.join(out_dir, "predictions.json.gz")
    merged = json.load(gzip.open(old)) if os.path.isfile(old) else {}  # a later call adds, never drops, tasks
    for suite, tasks in preds.items():
        merged.setdefault(suite, {}).update(tasks)
    body = {"results.json": json.dumps(res, indent=1).encode(),
            "predictions.json.gz": gzip.compress(json.dumps(merged).encode())}
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
        with open(os.path.join(out_dir, name + ".tmp"), "wb") as f:
            f.write(blob)
        os.replace(os.path.join(out_dir, name + ".tmp"), os.path.join(out_dir, name))
    res["predictions"] = preds


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        r = argparse.ArgumentParser(description="results.md over every evaluated run in --work-dir")
        r.add_argument("report")
        r.add_argument("--work-dir", default="out")
        r.add_argument("--out", default="results.md")
        r.add_argument("--header-file", default="", help="Markdown put at the top (command, date, machine)")
        a = r.parse_args(argv)
        header = open(a.header_file).read() if a.header_file else "# Results\n"
        print(report(a.work_dir, a.out, header))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--eval-dir", default=os.environ.get("BABYLM_EVAL_DIR", os.path.join("data", "evaluation_data")))
    p.add_argument("--tasks", default="blimp,supplement,ewok,glue")
    p.add_argument("--glue-tasks", default="", help="comma-separated subset (default: all 11)")
    p.add_argument("--max-train-examples", type=int, default=0, help="GLUE training subset per task (0: all)")
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--out-dir", default="", help="default: <checkpoint folder>/eval")
    p.add_argument("--tokenizer", default="", help="default: the one recorded in the checkpoint")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", help="trunk precision; the output head is always fp32")
    p.add_argument("--diagnostics", action="store_true", help="entropy, agreement, KLs to the teacher, diversity")
    p.add_argument("--teacher", default="", help="teacher for --diagnostics (default: the student's first)")
    args = p.parse_args(argv)
    try:
        for ckpt in args.checkpoints:
            res = evaluate(ckpt, args)
            print(open(os.path.join(args.out_dir or os.path.join(os.path.dirname(ckpt), "eval"), "tables.md")).read())
            del res
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)



# ---------------------------------------------------------------------------------------------------------
# diagnostics: is the student mode-seeking? (beyond the paper, which measures only downstream scores)


def distribution_stats(student_logits, teacher_logits, k: int = 10) -> dict:
    """Per position (N,): the student's entropy, top-1 agreement with the teacher, the student's mass on
    the teacher's top-k tokens, forward KL(p_T || q_S) and reverse KL(q_S || p_T), at temperature 1."""
    ls = F.log_softmax(student_logits.float(), -1)  # (N, V)
    lt = F.log_softmax(teacher_logits.float(), -1)
    qs = ls.exp()
    return {"entropy": -(qs * ls).sum(-1), "teacher_entropy": -(lt.exp() * lt).sum(-1),
            "top1_agreement": (student_logits.argmax(-1) == teacher_logits.argmax(-1)).float(),
            f"mass_on_teacher_top{k}": qs.gather(-1, teacher_logits.topk(k, -1).indices).sum(-1),
            "forward_kl": (lt.exp() * (lt - ls)).sum(-1), "reverse_kl": (qs * (ls - lt)).sum(-1)}


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
# report: results.md over every evaluated run, beside the paper's numbers, with the paper's claims tested


def paired_bootstrap(items_a: dict, items_b: dict, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Resampled differences of the macro score (mean over tasks of per-task accuracy), A minus B: the
    same items drawn for both models, independently within each task. Returns (n_boot,)."""
    rng = np.random.default_rng(seed)
    diffs = np.zeros(n_boot)
    tasks = sorted(set(items_a) & set(items_b))
    for t in tasks:
        d = np.array([int(a) - int(b) for a, b in zip(items_a[t], items_b[t])], dtype=np.float64)
        for lo in range(0, n_boot, 50):  # 50 resamples at a time bounds memory on 20k-item tasks
            idx = rng.integers(0, len(d), size=(min(50, n_boot - lo), len(d)))
            diffs[lo:lo + len(idx)] += d[idx].mean(1)
    return diffs / max(1, len(tasks))


BENCHMARKS = {"blimp": "BLiMP", "blimp_supplement": "BLiMP suppl.", "ewok": "EWoK", "glue": "GLUE"}
CLAIMS = [("one teacher vs two (reverse KL)", "rv-1-{d}", "rv-2-{d}"),
          ("one teacher vs two (reverse KL, +)", "rv-1-{d}+", "rv-2-{d}+"),
          ("reverse vs forward KL (one teacher)", "rv-1-{d}", "fw-1-{d}"),
          ("reverse vs forward KL (two teachers)", "rv-2-{d}", "fw-2-{d}"),
          ("+ vs plain (one teacher)", "rv-1-{d}+", "rv-1-{d}"),
          ("+ vs plain (two teachers)", "rv-2-{d}+", "rv-2-{d}")]


def claim_rows(runs: dict, data_tag: str) -> list:
    """Each claim as ours: the difference A - B (points) per benchmark and macro, 95% paired-bootstrap CI."""
    out = []
    for label, a, b in CLAIMS:
        a, b = f"ChooBaCa-{a.format(d=data_tag)}", f"ChooBaCa-{b.format(d=data_tag)}"
        if a not in runs or b not in runs:
            continue
        cells, macro = [], []
        for key in BENCHMARKS:
            ia, ib = runs[a].get("items", {}).get(key), runs[b].get("items", {}).get(key)
            if not ia or not ib:
                cells.append("-")
                continue
            boot = 100 * paired_bootstrap(ia, ib)
            macro.append(boot)
            diff = 100 * (runs[a]["scores"][key] - runs[b]["scores"][key])
            lo, hi = np.percentile(boot, [2.5, 97.5])
            cells.append(f"{diff:+.1f} [{lo:+.1f}, {hi:+.1f}]{'' if lo > 0 or hi < 0 else ' ~'}")
        if len(macro) == len(BENCHMARKS):
            m = np.mean(macro, axis=0)
            lo, hi = np.percentile(m, [2.5, 97.5])
            diff = 100 * (runs[a]["scores"]["macroaverage"] - runs[b]["scores"]["macroaverage"])
            cells.append(f"{diff:+.1f} [{lo:+.1f}, {hi:+.1f}]{'' if lo > 0 or hi < 0 else ' ~'}")
        else:
            cells.append("-")
        out.append(f"| {label} | {a} - {b} | " + " | ".join(cells) + " |")
    return out


def read_csv(path: str) -> list:
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_curves(work_dir: str, runs: list, out_dir: str) -> list:
    """One PNG per run of its training loss (and CE, KD) and validation loss against the step, when
    matplotlib is installed (an optional dependency); returns the files written."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for run in runs:
        log = os.path.join(work_dir, run, "log.jsonl")
        if not os.path.isfile(log):
            continue
        rows = [json.loads(line) for line in open(log) if line.strip()]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key in ("loss", "ce", "kd", "val_loss"):
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts), marker="o" if key == "val_loss" else None, label=key)
        ax.set(xlabel="step", ylabel="nats", title=run)
        ax.legend()
        path = os.path.join(out_dir, f"{run}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def report(work_dir: str, out_path: str, header: str = "") -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    paper2, paper3 = read_csv(os.path.join(here, "paper_table2.csv")), read_csv(os.path.join(here, "paper_table3.csv"))
    variants = [c for c in paper2[0] if c.startswith("ChooBaCa")]
    runs = {}
    for v in variants + [v.replace("-24", "-syn") for v in variants if "-24" in v]:
        path = os.path.join(work_dir, v, "eval", "results.json")
        if os.path.isfile(path):
            runs[v] = json.load(open(path))
    ours = {v: r for v, r in runs.items()}
    tag = "syn" if any("-syn" in v for v in runs) else "24"
    shown = [v for v in variants if v.replace("-24", "-" + tag) in runs or "-23" in v]
    col = {v: v.replace("-24", "-" + tag) for v in shown}
    md = [header, "## Table 3: averages (ours / paper)", "",
          "| model | BLiMP | BLiMP suppl. | EWoK | GLUE | Macro | val loss |", "|---|---|---|---|---|---|---|"]
    p3 = {r["model"]: r for r in paper3}
    for v in shown:
        r = ours.get(col[v])
        if r is None:
            md.append(f"| {v} | skipped: no {('2023' if '-23' in v else '2024')} data on this machine | | | | | |")
            continue
        s = r["scores"]
        cells = [f"{fmt(100 * s[k] if k in s else None)} / {p3[v][k]}" for k in
                 ("blimp", "blimp_supplement", "ewok", "glue", "macroaverage")]
        md.append(f"| {col[v]} | " + " | ".join(cells) + f" | {r.get('val_loss') or float('nan'):.3f} |")
    for base in ("Baby Llama", "LTG-BERT"):
        md.append(f"| {base} (paper) | " + " | ".join(p3[base][k] for k in
                                                     ("blimp", "blimp_supplement", "ewok", "glue", "macroaverage")) + " | |")
    evaluated = [v for v in shown if col[v] in ours]
    md += ["", "## Table 2: per task (ours / paper)", "",
           "| benchmark | task | " + " | ".join(col[v] for v in evaluated) + " |",
           "|---|---|" + "---|" * len(evaluated)]
    ours_rows = {v: {(b, n): s for b, n, s in table_rows(ours[col[v]])} for v in evaluated}
    for row in paper2:
        key = (row["benchmark"], row["task"])
        md.append(f"| {row['benchmark']} | {row['task']} | " + " | ".join(
            f"{fmt(ours_rows[v].get(key))} / {row[v]}" for v in evaluated) + " |")
    md += ["", "## The paper's claims, measured in this run", "",
           "Difference A - B in points, with a 95% paired bootstrap interval over the benchmark's items "
           "(1000 resamples, items drawn independently within each paradigm / task / domain). "
           "`~` marks an interval that contains 0: within noise.", "",
           "| claim | A - B | " + " | ".join(BENCHMARKS.values()) + " | Macro |", "|---|---|" + "---|" * 5]
    md += claim_rows(ours, tag)
    extra = sorted(d for d in os.listdir(work_dir) if d.startswith("ChooBaCa-") and d not in runs
                   and os.path.isfile(os.path.join(work_dir, d, "eval", "results.json")))
    for d in extra:
        runs[d] = json.load(open(os.path.join(work_dir, d, "eval", "results.json")))
    if extra:
        md += ["", "## Beyond the paper: other objectives (Table 3 layout)", "",
               "| model | BLiMP | BLiMP suppl. | EWoK | GLUE | Macro | val loss |", "|---|---|---|---|---|---|---|"]
        for d in extra:
            sc = runs[d]["scores"]
            md.append(f"| {d} | " + " | ".join(fmt(100 * sc[k] if k in sc else None) for k in
                                                ("blimp", "blimp_supplement", "ewok", "glue", "macroaverage"))
                      + f" | {runs[d].get('val_loss') or float('nan'):.3f} |")
    diag = {v: r["diagnostics"] for v, r in runs.items() if r.get("diagnostics")}
    if diag:
        keys = list(next(iter(diag.values())))
        md += ["", "## Mode-seeking diagnostics (dev set, against teacher 1; samples at temperature 1)", "",
               "| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        md += [f"| {v} | " + " | ".join(f"{d[k]:.3f}" for k in keys) + " |" for v, d in sorted(diag.items())]
    plots = plot_curves(work_dir, sorted(runs), os.path.join(work_dir, "plots"))
    if plots:  # linked relative to results.md; the PNGs stay in the (ignored) work folder
        here_dir = os.path.dirname(os.path.abspath(out_path))
        md += ["", "## Loss curves", ""] + [f"![{os.path.basename(p)[:-4]}]({os.path.relpath(p, here_dir)})"
                                           for p in plots]
    skipped = sorted({t for r in ours.values() for t in r.get("glue_skipped", {})})
    departures = sorted({d for r in ours.values() for d in r.get("departures", [])})
    if departures or skipped:
        md += ["", "Departures in this run: " + "; ".join(departures) + "."]
    text = "\n".join(md) + "\n"
    with open(out_path + ".tmp", "w") as f:
        f.write(text)
    os.replace(out_path + ".tmp", out_path)
    return text


if __name__ == "__main__":
    main()
