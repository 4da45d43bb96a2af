"""(Super)GLUE by full fine-tuning, as babylm/evaluation-pipeline-2024 does it (README "Evaluation"): a
classification head on the student's last token, lr 5e-5, batch 64, at most 10 epochs, linear decay, no
warmup, clipping 1.0, patience 3 (threshold 0.001) on the validation set, seed 12, inputs of at most 128
tokens, pairs truncated longest first. evaluate.py calls run_glue. Shape legend: B batch, T time, C = dim,
L labels.
"""
import copy
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import model as M
from data import read_jsonl
from runtime import autocast_ctx, set_seed

GLUE = {"cola": "CoLA (MCC)", "sst2": "SST-2", "mrpc": "MRPC (F1)", "qqp": "QQP (F1)", "mnli": "MNLI",
        "mnli-mm": "MNLI-mm", "qnli": "QNLI", "rte": "RTE", "boolq": "BoolQ", "multirc": "MultiRC", "wsc": "WSC"}
GLUE_METRIC = {"cola": "mcc", "mrpc": "f1", "qqp": "f1"}  # accuracy otherwise


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
    """BOS + first [+ EOS + second] in at most max_len tokens: a pair is truncated longest first, one token at
    a time from the longer part (the second on ties), as the official script's tokenizer does; a single
    sentence from the right."""
    out = []
    for row in rows:
        a, b = glue_text(task, row)
        a = tok.encode(a)
        if b is None:
            out.append(([tok.bos_id] + a)[:max_len])
            continue
        b = tok.encode(b)
        for _ in range(len(a) + len(b) + 2 - max_len):  # the excess, if any
            a, b = (a[:-1], b) if len(a) > len(b) else (a, b[:-1])
        out.append([tok.bos_id] + a + [tok.eos_id] + b)
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
             max_epochs=10, patience=3, seed=12, threshold=0.001) -> dict:
    """Full fine-tuning; after each epoch, score the validation set; keep the best epoch (by F1, by accuracy
    for MNLI) and stop after `patience` epochs without improvement. valid_sets: {name: rows}, the first one
    selects the epoch (MNLI-mm rides along with MNLI)."""
    set_seed(seed)
    labels = [r["label"] for r in train_rows]
    clf = Classifier(copy.deepcopy(backbone), 3 if task == "mnli" else 2, seed).to(device)
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=0.0)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")  # fp16 needs loss scaling
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
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(clf.parameters(), 1.0)  # Trainer's max_grad_norm
            scaler.step(opt)
            scaler.update()
            step += 1
        scores = {}
        for name, (vs, vy) in valid.items():
            p = predict(clf, vs, device, precision)
            scores[name] = {"accuracy": accuracy(vy, p), "f1": f1_binary(vy, p), "mcc": mcc(vy, p), "pred": p}
        first = scores[next(iter(valid))]
        history.append({"epoch": epoch, "loss": loss.item(), select: first[select]})
        previous = None if best is None else best[0][next(iter(valid))][select]
        if previous is None or first[select] > previous:  # the best epoch: any gain, as Trainer keeps it
            best = (scores, epoch)
        # patience, as the official EarlyStoppingCallback: a gain of at most 0.001 counts as none
        bad_epochs = 0 if previous is None or first[select] - previous > threshold else bad_epochs + 1
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
