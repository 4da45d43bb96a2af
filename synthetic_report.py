"""The synthetic experiment's part of results.md (README "The synthetic experiment"): every student of
run_all.sh's runs/<size>/<cell>/b<steps>-s<seed> folders scored against the true language, with 95% bootstrap
intervals over seeds and samples: the learning-rate sweep, the convergence check, the ablation ladder, the
paper's variants and their verdicts at three budgets, the capacity sweep and the positive control.

    python synthetic_report.py --best-lr out/runs/d8 fw-1      # the sweep's learning rate (run_all.sh)
"""
import json
import os
import re
import sys

import numpy as np

from cli import guard
from data import read_jsonl
from measures import bootstrap_mean, interval

MEASURES = [("precision", "grammatical %", 100.0), ("true_logp", "log p_true / token", 1.0),
            ("recall_kl", "KL(p_true‖q) / token", 1.0), ("reverse_kl", "KL(q‖p_T) / token", 1.0),
            ("forward_kl", "KL(p_T‖q) / token", 1.0), ("entropy", "entropy / token", 1.0)]
SYN_CLAIMS = [("reverse vs forward KL (one teacher)", "rv-1", "fw-1"),
              ("reverse vs forward KL (two teachers)", "rv-2", "fw-2"),
              ("reverse KL + vs forward KL (one teacher)", "rv-1+", "fw-1"),
              ("one teacher vs two (reverse KL)", "rv-1", "rv-2"),
              ("one teacher vs two (reverse KL, +)", "rv-1+", "rv-2+"),
              ("+ vs plain (one teacher)", "rv-1+", "rv-1"),
              ("+ vs plain (two teachers)", "rv-2+", "rv-2")]
PAPER_ORDER = ["fw-1", "fw-2", "rv-1", "rv-2", "rv-1+", "rv-2+"]
# the ablation ladder (README): rung, what it adds, reverse cell, forward cell
LADDER = [("a", "pure KD (alpha 0), T = 1, corpus prefixes", "a-rv", "a-fw"),
          ("b", "(a) with T = 2", "b-rv", "b-fw"),
          ("c", "(b) with CE, alpha 0.5 (forward: the paper's fw-1)", "c-rv", "fw-1"),
          ("d", "(c) with mixing, constant lambda 0.9 (eq. 2)", "d-rv", "d-fw"),
          ("e+", "the paper's rv-1+ (progressive lambda, step-wise) against fw-1", "rv-1+", "fw-1"),
          ("e", "the paper's rv-1 (mixing, single-step term) against fw-1", "rv-1", "fw-1"),
          ("a'", "pure KD, T = 1, on the student's own samples (on-policy)", "ap-rv", "ap-fw")]
RUN_RE = re.compile(r"^b(\d+)-s(\d+)$")
LONG_CELLS = ("fw-1", "rv-1+")  # the cells LONG=1 also runs beyond the budget
RANDOM_CELLS = ("fw-1-random", "rv-1+-random")  # WINDOWS_CHECK=1: random windows at 4 times the budget


def load_json(path: str):
    with open(path) as f:
        return json.load(f)


def last_val_loss(run_dir: str) -> float:
    log = os.path.join(run_dir, "log.jsonl")
    val = [r["val_loss"] for r in read_jsonl(log) if "val_loss" in r] if os.path.isfile(log) else []
    return val[-1] if val else float("nan")


def load_runs(work_dir: str) -> dict:
    """{(size, cell, steps): [measures.json of each seed, with seed, val_loss and lr]} of runs/."""
    root, out = os.path.join(work_dir, "runs"), {}
    for size in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        for cell in sorted(os.listdir(os.path.join(root, size))):
            for run in sorted(os.listdir(os.path.join(root, size, cell))):
                m, d = RUN_RE.match(run), os.path.join(root, size, cell, run)
                if not m or not os.path.isfile(os.path.join(d, "eval", "measures.json")):
                    continue
                r = load_json(os.path.join(d, "eval", "measures.json"))
                r.update(seed=int(m.group(2)), val_loss=last_val_loss(d), lr=load_json(os.path.join(d, "config.json"))["lr"])
                out.setdefault((size, cell, int(m.group(1))), []).append(r)
    return out


def sweep(size_dir: str, cell: str) -> dict:
    """{lr: final validation CE} of the sweep runs sweep-<cell>-lr<lr>/b*-s0 in a size folder."""
    out = {}
    for d in sorted(os.listdir(size_dir)) if os.path.isdir(size_dir) else []:
        if d.startswith(f"sweep-{cell}-lr"):
            runs = [os.path.join(size_dir, d, r) for r in os.listdir(os.path.join(size_dir, d)) if RUN_RE.match(r)]
            if runs:
                out[d[len(f"sweep-{cell}-lr"):]] = last_val_loss(runs[0])
    return out


def best_lr(size_dir: str, cell: str) -> str:
    """The sweep's learning rate with the lowest final validation CE (never the mode-seeking measures)."""
    losses = {lr: v for lr, v in sweep(size_dir, cell).items() if np.isfinite(v)}
    if not losses:
        raise ValueError(f"no finished sweep run sweep-{cell}-lr*/ in {size_dir}")
    return min(losses, key=losses.get)


def _items(runs: list, key: str) -> list:
    return [np.array([np.nan if v is None else v for v in r["final"][key]], dtype=float) for r in runs]


def _mean(runs: list, key: str) -> float:
    return float(np.nanmean(np.concatenate(_items(runs, key))))


def _cell(runs: list, key: str, scale: float) -> str:
    items = _items(runs, key)
    if np.isnan(np.concatenate(items)).all():  # e.g. no grammatical sample at all: no log p_true to average
        return "-"
    lo, hi = interval(bootstrap_mean(items))
    d = 1 if scale == 100 else 3
    return f"{scale * _mean(runs, key):.{d}f} [{scale * lo:.{d}f}, {scale * hi:.{d}f}]"


def diff_interval(a: list, b: list, key: str) -> tuple:
    """(mean(A) - mean(B), low, high): the difference with its 95% bootstrap interval over seeds and items."""
    lo, hi = interval(bootstrap_mean(_items(a, key), seed=1) - bootstrap_mean(_items(b, key), seed=2))
    return _mean(a, key) - _mean(b, key), lo, hi


def difference(a: list, b: list, key: str, scale: float) -> tuple:
    """(cell text, sign: 0 within noise, else +-1) of mean(A) - mean(B) with a 95% bootstrap interval."""
    diff, lo, hi = diff_interval(a, b, key)
    sign = 0 if lo <= 0 <= hi else (1 if diff > 0 else -1)
    d = 1 if scale == 100 else 3
    return f"{scale * diff:+.{d}f} [{scale * lo:+.{d}f}, {scale * hi:+.{d}f}]" + (" ~" if sign == 0 else ""), sign


def verdict(a: list, b: list) -> tuple:
    """(cells, one-line verdict) for A - B on precision and on KL(p_true || q), 95% bootstrap intervals."""
    (cp, p), (ck, k) = difference(a, b, "precision", 100.0), difference(a, b, "recall_kl", 1.0)
    words = {(1, 1): "the mode-seeking signature: higher precision, lower recall",
             (-1, -1): "the mass-covering signature: lower precision, higher recall",
             (1, -1): "better on both: higher precision and higher recall",
             (-1, 1): "worse on both: lower precision and lower recall",
             (0, 0): "within noise on both"}  # k > 0: A covers the language worse (lower recall)
    text = words.get((p, k)) or (f"precision within noise, {'lower' if k > 0 else 'higher'} recall" if p == 0 else
                                 f"{'higher' if p > 0 else 'lower'} precision, recall within noise")
    return [cp, ck], text


def converged(short: list, full: list) -> tuple:
    """The check over the last doubling of the budget: ([(text "B/2 → B", text "move; ± half-width")] per
    measure, converged?). Converged when, for grammatical % and KL(p_true || q), the mean moved from B/2 to B
    by less than the half-width of the B run's 95% interval."""
    cells, ok = [], True
    for key, scale in (("precision", 100.0), ("recall_kl", 1.0)):
        lo, hi = interval(bootstrap_mean(_items(full, key)))
        move, half = _mean(full, key) - _mean(short, key), (hi - lo) / 2
        ok &= abs(move) < half
        d = 1 if scale == 100 else 3
        cells.append((f"{scale * _mean(short, key):.{d}f} → {scale * _mean(full, key):.{d}f}",
                      f"{scale * move:+.{d}f}; ±{scale * half:.{d}f}"))
    return cells, ok


def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def pr_plot(groups: dict, teacher: dict, path: str) -> bool:
    """Precision (grammatical %) against recall as KL(p_true || q) per token (left is better), one point
    per run and seed, the teacher a star; a PNG when matplotlib is installed."""
    plt = _plt()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (label, runs) in enumerate(sorted(groups.items())):
        xs = [np.nanmean(_items([r], "recall_kl")[0]) for r in runs]
        ys = [100 * np.nanmean(_items([r], "precision")[0]) for r in runs]
        ax.scatter(xs, ys, label=label, marker="os^vD<>ph"[i % 9], s=36, alpha=0.85)
    if teacher:
        ax.scatter([teacher["along"][-1]["recall_kl"]], [100 * teacher["along"][-1]["precision"]], marker="*",
                   s=220, c="k", label="teacher")
    ax.set(xlabel="KL(p_true || q) per token, nats (lower = better recall)", ylabel="grammatical samples, %",
           title="Synthetic language: precision vs recall")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def capacity_plot(rows: list, path: str) -> bool:
    """rv-1+ - fw-1 in grammatical points and in KL(p_true || q), with 95% intervals, against parameters."""
    plt = _plt()
    if plt is None or not rows:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    x = [r["params"] for r in rows]
    for ax, key, label in ((axes[0], "precision", "grammatical %, rv-1+ - fw-1 (points)"),
                           (axes[1], "recall_kl", "KL(p_true || q), rv-1+ - fw-1 (nats/token)")):
        mid = [r[key][0] for r in rows]
        err = [[m - r[key][1] for m, r in zip(mid, rows)], [r[key][2] - m for m, r in zip(mid, rows)]]
        ax.errorbar(x, mid, yerr=err, marker="o", capsize=3)
        ax.axhline(0, c="grey", lw=0.8)
        ax.set(xscale="log", xlabel="student parameters", ylabel=label)
    fig.suptitle("Synthetic language: reverse minus forward KL against student size")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _student_rows(runs: dict, keys: list) -> list:
    rows = []
    for label, group in keys:
        group = sorted(group, key=lambda r: r["seed"])
        rows.append(f"| {label} | {len(group)} | {group[0]['lr']:g} | " + " | ".join(_cell(group, k, s) for k, _, s in MEASURES)
                    + " | " + ", ".join(f"{100 * r['along'][-1]['precision']:.1f}" for r in group)
                    + f" | {np.mean([r['val_loss'] for r in group]):.3f} |")
    return rows


def synthetic_section(work_dir: str, out_path: str) -> list:
    runs = load_runs(work_dir)
    if not runs:
        return []
    sizes = sorted({s for s, _, _ in runs}, key=lambda s: int(s[1:]))
    # the budget B of the sweep, the ladder and the paper's variants; LONG=1 runs fw-1 and rv-1+ beyond it
    budget = max((n for _, c, n in runs if c not in LONG_CELLS + RANDOM_CELLS), default=max(n for _, _, n in runs))
    main = "d8" if "d8" in sizes else sizes[0]
    at = lambda size, cell, n=budget: runs.get((size, cell, n))  # noqa: E731
    teacher_dirs = [d for d in sorted(os.listdir(work_dir)) if d.startswith("teacher-") and d.endswith("-synthetic")
                    and os.path.isfile(os.path.join(work_dir, d, "eval", "measures.json"))]
    teacher = load_json(os.path.join(work_dir, teacher_dirs[0], "eval", "measures.json")) if teacher_dirs else {}
    n = next(iter(runs.values()))[0]["n"]
    md = ["## The synthetic experiment: is the reverse-KL student mode-seeking? (synthetic language, NOT BabyLM)", "",
          f"Every student is scored on {n} samples (temperature 1) at the end of its run; each cell is the mean with a "
          "95% bootstrap interval over seeds and samples. Precision: the share of samples the grammar can produce, and "
          "their true log-probability per token. Recall: KL(p_true‖q) per token on held-out sentences of the grammar "
          "(lower is better). KLs to the teacher are sequence-level Monte Carlo estimates, per token. A - B "
          "differences: `~` marks an interval that contains 0 (within noise); a positive KL(p_true‖q) difference "
          "means A covers the language worse.", ""]
    t_kl = float("nan")
    if teacher:
        t = teacher["along"][-1]
        t_kl = t["recall_kl"]
        md += [f"Teacher ({teacher_dirs[0]}): grammatical {100 * t['precision']:.1f}%, KL(p_true‖p_T) "
               f"{t_kl:.4f} nats/token on held-out sentences (its NLL minus the true entropy "
               f"{teacher.get('true_entropy', float('nan')):.3f} nats/token).", ""]
    # the sweep
    rates = {c: sweep(os.path.join(work_dir, "runs", main), c) for c in ("fw-1", "rv-1+")}
    if any(rates.values()):
        lrs = sorted({lr for r in rates.values() for lr in r}, key=float)
        md += [f"### Learning rates (sweep at {main}, {budget} steps, seed 0, judged on validation CE)", "",
               "| objective | " + " | ".join(f"lr {lr}" for lr in lrs) + " | chosen |", "|---|" + "---|" * (len(lrs) + 1)]
        for c, r in rates.items():
            chosen = min((lr for lr in r if np.isfinite(r[lr])), key=r.get, default="-")
            md.append(f"| {c} | " + " | ".join(f"{r[lr]:.4f}" if lr in r else "-" for lr in lrs) + f" | {chosen} |")
        md.append("")
    # every student at the main size
    students = [c for c in PAPER_ORDER if at(main, c)] + sorted({c for s, c, k in runs if s == main and k == budget
                                                                  and c not in PAPER_ORDER})
    md += [f"### Every student at {main}, {budget} steps", "",
           "| student | seeds | lr | " + " | ".join(name for _, name, _ in MEASURES) + " | grammatical % by seed | val CE |",
           "|---|---|---|" + "---|" * (len(MEASURES) + 2)]
    md += _student_rows(runs, [(c, at(main, c)) for c in students])
    if at(main, "fw-1") and np.isfinite(t_kl):
        gap = ", ".join(f"{c} {_mean(at(main, c), 'recall_kl'):.4f} ({_mean(at(main, c), 'recall_kl') / t_kl:.1f}×)"
                        for c in ("fw-1", "rv-1+", "rv-1") if at(main, c))
        md += ["", f"The capacity gap at {main} ({at(main, 'fw-1')[0].get('params', 0):,} parameters): KL(p_true‖q) per "
                   f"token {gap}, against the teacher's KL(p_true‖p_T) {t_kl:.4f}."]
    # convergence
    half = budget // 2
    md += ["", f"### Convergence: each student at {half} and {budget} steps (two full schedules)", "",
           f"Grammatical % and KL(p_true‖q) at {half} → {budget} steps (the move; ± the half-width of the {budget}-step "
           "95% interval). Converged: both moves smaller than the interval.", "",
           "| size | student | grammatical % | KL(p_true‖q) | converged |", "|---|---|---|---|---|"]
    n_ok = n_all = 0
    for size in sizes:
        for c in sorted({c for s, c, k in runs if s == size and k == budget}, key=lambda c: (c not in PAPER_ORDER, c)):
            if at(size, c, half):
                cells, ok = converged(at(size, c, half), at(size, c))
                n_ok, n_all = n_ok + ok, n_all + 1
                md.append(f"| {size} | {c} | " + " | ".join(f"{way} ({move})" for way, move in cells)
                          + f" | {'yes' if ok else '**no**'} |")
    md += ["", f"{n_ok} of {n_all} students converged by this check."]
    # the ladder
    rungs = [(r, what, a, b) for r, what, a, b in LADDER if at(main, a) and at(main, b)]
    if rungs:
        md += ["", f"### The ablation ladder at {main}: reverse minus forward KL, one ingredient at a time", "",
               "| rung | recipe | A - B | grammatical, points | KL(p_true‖q) | entropy / token | verdict |",
               "|---|---|---|---|---|---|---|"]
        for r, what, a, b in rungs:
            cells, text = verdict(at(main, a), at(main, b))
            ent = difference(at(main, a), at(main, b), "entropy", 1.0)[0]
            md.append(f"| {r} | {what} | {a} - {b} | {cells[0]} | {cells[1]} | {ent} | {text} |")
    # the paper's claims, by budget
    budgets = sorted({k for s, c, k in runs if s == main and c in PAPER_ORDER and k <= budget}, reverse=True)
    md += ["", f"### The paper's variants: verdicts at {main}, by budget (each a full schedule of that length)", "",
           "| claim | A - B | steps | grammatical, points | KL(p_true‖q) | verdict |", "|---|---|---|---|---|---|"]
    for label, a, b in SYN_CLAIMS:
        for k in budgets:
            if at(main, a, k) and at(main, b, k):
                cells, text = verdict(at(main, a, k), at(main, b, k))
                md.append(f"| {label} | {a} - {b} | {k} | {cells[0]} | {cells[1]} | {text} |")
    md += long_section(runs, main, budget, t_kl)
    # fixed windows (the first epoch's, every epoch) against a fresh random offset per epoch (WINDOWS_CHECK=1),
    # over several epochs: runs of at most one epoch read the same windows either way
    wk = max((n for s, c, n in runs if s == main and c == RANDOM_CELLS[0]), default=None)
    if wk and all(at(main, c, wk) for c in LONG_CELLS + RANDOM_CELLS):
        md += ["", f"### Fixed windows against a fresh random offset per epoch, at {main}, {wk} steps", "",
               "Fixed: every epoch reads the first epoch's windows (the offset the seed draws), one teacher cache "
               "per seed; random: each epoch its own offset (and its own cache). A run of at most one epoch reads the "
               "same windows either way.", "",
               "| windows | A - B | grammatical, points | KL(p_true‖q) | verdict |", "|---|---|---|---|---|"]
        for label, a, b in (("fixed", "rv-1+", "fw-1"), ("random offsets", "rv-1+-random", "fw-1-random"),
                            ("random - fixed, fw-1", "fw-1-random", "fw-1"),
                            ("random - fixed, rv-1+", "rv-1+-random", "rv-1+")):
            cells, text = verdict(at(main, a, wk), at(main, b, wk))
            md.append(f"| {label} | {a} - {b} | {cells[0]} | {cells[1]} | {text} |")
    # capacity
    cap = []
    for size in sizes:
        if at(size, "fw-1") and at(size, "rv-1+"):
            fw, rv = at(size, "fw-1"), at(size, "rv-1+")
            row = {"size": size, "params": fw[0].get("params", 0), "fw_kl": _mean(fw, "recall_kl"),
                   "rv_kl": _mean(rv, "recall_kl"), "verdict": verdict(rv, fw),
                   "val": [np.mean([r["val_loss"] for r in g]) for g in (fw, rv)]}
            for key, scale in (("precision", 100.0), ("recall_kl", 1.0)):
                row[key] = tuple(scale * v for v in diff_interval(rv, fw, key))
            cap.append(row)
    if len(cap) > 1:
        md += ["", "### Capacity: rv-1+ against fw-1 at each student size", "",
               f"The teacher's KL(p_true‖p_T) is {t_kl:.4f}; each student's KL(p_true‖q) beside it, as a multiple; "
               "val CE: each objective's final validation CE, the mean over seeds (every size runs at the main "
               "size's learning rates: a CE far above its neighbours' is a student that did not train).", "",
               "| size | params | fw-1 KL(p_true‖q) | × teacher | rv-1+ KL(p_true‖q) | val CE fw-1 / rv-1+ | grammatical, "
               "points | KL(p_true‖q) | verdict |", "|---|---|---|---|---|---|---|---|---|"]
        for r in cap:
            cells, text = r["verdict"]
            md.append(f"| {r['size']} | {r['params']:,} | {r['fw_kl']:.4f} | {r['fw_kl'] / t_kl:.1f} | {r['rv_kl']:.4f} | "
                      f"{r['val'][0]:.3f} / {r['val'][1]:.3f} | {cells[0]} | {cells[1]} | {text} |")
        png = os.path.splitext(out_path)[0] + "_capacity.png"
        if capacity_plot(cap, png):
            md += ["", f"![rv - fw against size]({os.path.relpath(png, os.path.dirname(os.path.abspath(out_path)))})"]
    md += control_section(work_dir)
    png = os.path.splitext(out_path)[0] + "_pr.png"
    if pr_plot({c: at(main, c) for c in students}, teacher, png):
        md += ["", f"![precision vs recall]({os.path.relpath(png, os.path.dirname(os.path.abspath(out_path)))})"]
    return md


def long_section(runs: dict, main: str, budget: int, t_kl: float) -> list:
    """LONG=1: fw-1 and rv-1+ at every budget up to 8 B, each a full schedule: per objective its measures, the
    convergence check from the budget before (half of it), and the capacity gap; then rv-1+ - fw-1."""
    fw, rv = LONG_CELLS
    steps = sorted(k for s, c, k in runs if s == main and c == fw and runs.get((main, rv, k)))
    if not steps or steps[-1] <= budget:
        return []
    md = ["", f"### Where the verdict leads: {fw} and {rv} at {main} up to {steps[-1]} steps (LONG=1)", "",
          f"Each budget is a full schedule. Converged: from half the budget, grammatical % and KL(p_true‖q) moved by less "
          f"than the half-width of the 95% interval (the move; ± the half-width). × teacher: KL(p_true‖q) over the "
          f"teacher's {t_kl:.4f}.", "",
          "| steps | student | grammatical % | KL(p_true‖q) | × teacher | grammatical move | KL move | converged |",
          "|---|---|---|---|---|---|---|---|"]
    for k in steps:
        for c in (fw, rv):
            kl = _mean(runs[(main, c, k)], "recall_kl")
            check = ["-", "-", "-"]
            if runs.get((main, c, k // 2)):
                cells, ok = converged(runs[(main, c, k // 2)], runs[(main, c, k)])
                check = [move for _, move in cells] + ["yes" if ok else "**no**"]
            md.append(f"| {k} | {c} | {_cell(runs[(main, c, k)], 'precision', 100.0)} | "
                      f"{_cell(runs[(main, c, k)], 'recall_kl', 1.0)} | {kl / t_kl:.1f} | " + " | ".join(check) + " |")
    md += ["", "| steps | A - B | grammatical, points | KL(p_true‖q) | entropy / token | verdict |",
           "|---|---|---|---|---|---|"]
    for k in steps:
        cells, text = verdict(runs[(main, rv, k)], runs[(main, fw, k)])
        ent = difference(runs[(main, rv, k)], runs[(main, fw, k)], "entropy", 1.0)[0]
        md.append(f"| {k} | {rv} - {fw} | {cells[0]} | {cells[1]} | {ent} | {text} |")
    return md


def control_section(work_dir: str) -> list:
    control = os.path.join(work_dir, "positive_control.json")
    if not os.path.isfile(control):
        return []
    c = load_json(control)
    mean = {o: {k: np.mean([r[k] for r in c[o]]) for k in c[o][0]} for o in c}
    ok = mean["rv"]["precision"] > mean["fw"]["precision"] and mean["rv"]["forward_kl"] > mean["fw"]["forward_kl"]
    md = ["", "### Positive control (known answer)", "",
          "A teacher whose next token after c is c + 1 or c + 8 (0.49 each) and a student with a 2-dimensional "
          "hidden state, trained through distill.py's step (pure KD, T = 1, 300 steps, 3 seeds). Precision: the "
          "student's mass on the teacher's two modes.", "",
          "| objective | precision | KL(p_T‖q) | KL(q‖p_T) |", "|---|---|---|---|"]
    md += [f"| {o} | {100 * mean[o]['precision']:.1f}% | {mean[o]['forward_kl']:.3f} | {mean[o]['reverse_kl']:.3f} |"
           for o in ("fw", "rv")]
    return md + ["", f"Reverse KL came out with higher precision and lower recall than forward KL: "
                     f"**{'yes' if ok else 'NO'}**."]


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "--best-lr":
        sys.exit(__doc__)
    guard(lambda: print(best_lr(sys.argv[2], sys.argv[3])))()
