"""The synthetic experiment's report (lab/README.md): every student of <work>/runs/<size>/<cell>/b<steps>-s<seed>
scored against the true language, and the answer to one question: is the reverse-KL student more precise and
less covering than the forward one? Two comparisons, rv-1+ - fw-1 (the paper's best recipe against its forward
baseline) and a-rv - a-fw (the divergence alone: pure KD at T = 1), each at two budgets B and 2B, paired by seed;
then, where the runs exist (SCALE=full), the paper's other variants, the ablation ladder, the learning-rate
sweep, the student sizes, longer budgets and the windows check.

    python -m lab.synthetic_report --work-dir out --out results/synthetic.md --header-file out/report_header.md
    python -m lab.synthetic_report --best-lr out/runs/d16 fw-1         # the sweep's learning rate

Rules (stats.py): a difference A - B pairs A's and B's seed i (the same initial weights and data order); "within
noise" when its 95% interval holds 0; the verdict is *stable* when the estimates at B and 2B agree (each inside
the other's interval); a student has *converged* over a doubling of its budget when it moved by less than the
fixed tolerance (1 point of grammaticality, 0.005 nats of KL(p_true||q)), whatever its number of seeds.
"""
import argparse
import json
import os
import re

import numpy as np

import stats as S
from cli import guard
from data import read_jsonl

MEASURES = [("precision", "grammatical %", 100.0), ("recall_kl", "KL(p_true‖q) / token", 1.0),
            ("reverse_kl", "KL(q‖p_T) / token", 1.0), ("entropy", "entropy / token", 1.0)]
KEYS = {"precision": ("grammatical, points", 100.0, 1), "recall_kl": ("KL(p_true‖q), nats/token", 1.0, 3)}
TARGET = {"precision": 3.0, "recall_kl": 0.01}  # the widest interval half-width the answer accepts
TOLERANCE = {"precision": 1.0, "recall_kl": 0.005}  # the smallest move the experiment claims to resolve
QUESTION = [("rv-1+", "fw-1", "the paper's best recipe against its forward baseline"),
            ("a-rv", "a-fw", "the divergence alone: pure KD at T = 1")]
PAPER = ["fw-1", "fw-2", "rv-1", "rv-2", "rv-1+", "rv-2+"]
CLAIMS = [("rv-1", "fw-1", "reverse vs forward KL (one teacher)"), ("rv-2", "fw-2", "reverse vs forward KL (two teachers)"),
          ("rv-1", "rv-2", "one teacher vs two (reverse KL)"), ("rv-1+", "rv-2+", "one teacher vs two (reverse KL, +)"),
          ("rv-1+", "rv-1", "+ vs plain (one teacher)"), ("rv-2+", "rv-2", "+ vs plain (two teachers)")]
LADDER = [("a", "pure KD (alpha 0), T = 1, corpus prefixes", "a-rv", "a-fw"),
          ("b", "(a) at T = 2", "b-rv", "b-fw"),
          ("c", "(b) with CE, alpha 0.5 (forward: the paper's fw-1)", "c-rv", "fw-1"),
          ("d", "(c) with mixing, constant lambda 0.9 (eq. 2)", "d-rv", "d-fw"),
          ("e+", "the paper's rv-1+ (progressive lambda, step-wise)", "rv-1+", "fw-1"),
          ("e", "the paper's rv-1 (mixing, single-step term)", "rv-1", "fw-1"),
          ("a'", "pure KD, T = 1, on the student's own samples", "ap-rv", "ap-fw")]
RUN_RE = re.compile(r"^b(\d+)-s(\d+)$")
SINGLE_STEP = ("rv-1", "rv-2", "ap-fw", "ap-rv")  # 5-8 times a teacher-forced step: no second round of seeds


def load_json(path: str):
    with open(path) as f:
        return json.load(f)


def last_val_loss(run_dir: str) -> float:
    log = os.path.join(run_dir, "log.jsonl")
    val = [r["val_loss"] for r in read_jsonl(log) if "val_loss" in r] if os.path.isfile(log) else []
    return val[-1] if val else float("nan")


def load_runs(work_dir: str) -> dict:
    """{(size, cell, steps): {seed: measures.json with val_loss and lr}} of <work>/runs (sweeps left out)."""
    root, out = os.path.join(work_dir, "runs"), {}
    for size in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        for cell in sorted(os.listdir(os.path.join(root, size))):
            if cell.startswith(("sweep-", ".")):
                continue
            for run in sorted(os.listdir(os.path.join(root, size, cell))):
                m, d = RUN_RE.match(run), os.path.join(root, size, cell, run)
                if not m or not os.path.isfile(os.path.join(d, "eval", "measures.json")):
                    continue
                r = load_json(os.path.join(d, "eval", "measures.json"))
                r.update(val_loss=last_val_loss(d), lr=load_json(os.path.join(d, "config.json"))["lr"])
                out.setdefault((size, cell, int(m.group(1))), {})[int(m.group(2))] = r
    return out


def sweep(size_dir: str, cell: str) -> dict:
    """{lr: mean final validation CE over the seeds} of the sweep runs sweep-<cell>-lr<lr>/b*-s* of a size."""
    out = {}
    for d in sorted(os.listdir(size_dir)) if os.path.isdir(size_dir) else []:
        if d.startswith(f"sweep-{cell}-lr"):
            runs = [os.path.join(size_dir, d, r) for r in os.listdir(os.path.join(size_dir, d)) if RUN_RE.match(r)]
            losses = [v for v in map(last_val_loss, runs) if np.isfinite(v)]
            if losses:
                out[d[len(f"sweep-{cell}-lr"):]] = float(np.mean(losses))
    return out


def best_lr(size_dir: str, cell: str) -> str:
    """The sweep's learning rate with the lowest mean final validation CE (never the mode-seeking measures)."""
    losses = sweep(size_dir, cell)
    if not losses:
        raise ValueError(f"no finished sweep run sweep-{cell}-lr*/ in {size_dir}")
    return min(losses, key=losses.get)


def items(group: dict, key: str, seeds: list = None) -> list:
    """The per-seed item arrays of one measure, in seed order (None: NaN, an ungrammatical sample's log p)."""
    return [np.array([np.nan if v is None else v for v in group[s]["final"][key]], dtype=float)
            for s in (seeds if seeds is not None else sorted(group))]


def cell_text(group: dict, key: str, scale: float) -> str:
    per_seed = items(group, key)
    if np.isnan(np.concatenate(per_seed)).all():  # e.g. no grammatical sample at all
        return "-"
    lo, hi = S.interval(S.bootstrap_mean(per_seed))
    d = 1 if scale == 100 else 3
    return f"{scale * S.pooled_mean(per_seed):.{d}f} [{scale * lo:.{d}f}, {scale * hi:.{d}f}]"


VERDICTS = {(1, 1): "the mode-seeking signature: higher precision, lower recall",
            (-1, -1): "the mass-covering signature: lower precision, higher recall",
            (1, -1): "better on both: higher precision and higher recall",
            (-1, 1): "worse on both: lower precision and lower recall",
            (0, 0): "within noise on both"}  # (precision sign, KL(p_true||q) sign): a higher KL is a lower recall


def verdict_words(p: int, k: int) -> str:
    return VERDICTS.get((p, k)) or (f"precision within noise, {'lower' if k > 0 else 'higher'} recall" if p == 0
                                    else f"{'higher' if p > 0 else 'lower'} precision, recall within noise")


def anchor(p: int, k: int, narrow: bool = True) -> str:
    """The prediction a (precision, KL(p_true||q)) sign pair of reverse minus forward KL favours: the paper's
    (reverse KL makes the student mode-seeking), Wu et al.'s (COLING 2025: one optimum, the same student after
    enough training; early on forward KL fits the head and reverse KL the tail), or none of them in full.
    "The same student" needs more than an interval that holds 0: both intervals within the targets (`narrow`);
    a wider one decides nothing. Agarwal et al.'s (GKD) concerns student size, judged across sizes (gkd_trend)."""
    if (p, k) == (0, 0) and not narrow:
        return "undecided: intervals wider than the targets"
    return {(1, 1): "the paper: mode-seeking", (0, 0): "Wu et al.: the same student",
            (-1, -1): "Wu et al.: forward fits the head, reverse the tail"}.get((p, k), "none of the three in full")


def compare(a: dict, b: dict) -> dict:
    """A - B over the seeds both have, paired by seed: per measure (difference, low, high) in report units,
    the signs, the verdict and the anchor it favours."""
    seeds = sorted(set(a) & set(b))
    out = {"seeds": len(seeds)}
    for key, (_, scale, _) in KEYS.items():
        d, lo, hi = S.difference(items(a, key, seeds), items(b, key, seeds), paired=True)
        out[key] = (scale * d, scale * lo, scale * hi)
    p, k = S.sign(out["precision"]), S.sign(out["recall_kl"])
    narrow = all(half_width(out, key) <= TARGET[key] for key in KEYS)
    out.update(signs=(p, k), verdict=verdict_words(p, k), anchor=anchor(p, k, narrow))
    return out


def diff_text(c: dict, key: str) -> str:
    _, _, digits = KEYS[key]
    d, lo, hi = c[key]
    return f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]" + (" ~" if lo <= 0 <= hi else "")


def half_width(c: dict, key: str) -> float:
    return (c[key][2] - c[key][1]) / 2


def stability(first: dict, second: dict) -> str:
    """'stable' when, for both measures, the estimates at B and 2B agree (stats.agree), else how far it moves."""
    moved = [f"{second[k][0] - first[k][0]:+.{KEYS[k][2]}f} {'points' if k == 'precision' else 'nats'}"
             for k in KEYS if not S.agree(first[k], second[k])]
    return "stable" if not moved else "moves by " + " and ".join(moved)


def converged(short: dict, long: dict) -> tuple:
    """(moves per measure in report units, converged?) from the shorter budget to the longer: converged when
    every move is smaller than the fixed tolerance (TOLERANCE), never an interval that narrows with seeds."""
    moves = {k: KEYS[k][1] * (S.pooled_mean(items(long, k)) - S.pooled_mean(items(short, k))) for k in KEYS}
    return moves, all(S.within(moves[k], TOLERANCE[k]) for k in KEYS)


def gkd_trend(rows: list) -> str:
    """Agarwal et al. (GKD): the choice of divergence matters while the student cannot represent the teacher,
    and the gap narrows as it grows. rows: (params, comparison) by size, at one budget."""
    mags = [max(abs(c["precision"][0]) / TARGET["precision"], abs(c["recall_kl"][0]) / TARGET["recall_kl"])
            for _, c in sorted(rows, key=lambda r: r[0])]
    noise = [c["signs"] == (0, 0) for _, c in sorted(rows, key=lambda r: r[0])]
    if all(noise):  # nothing to narrow: the divergence mattered at no size
        return "no: within noise at every size"
    narrows = mags[-1] < mags[0] and (noise[-1] or not noise[0])
    return "yes" if narrows else "no"


def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def pr_plot(groups: dict, teacher: dict, path: str, title: str) -> bool:
    """Precision (grammatical %) against recall as KL(p_true || q) per token (left is better), one point per
    seed, the teacher a star; a PNG when matplotlib is installed."""
    plt = _plt()
    if plt is None or not groups:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (label, group) in enumerate(groups.items()):
        xs = [np.nanmean(x) for x in items(group, "recall_kl")]
        ys = [100 * np.nanmean(x) for x in items(group, "precision")]
        ax.scatter(xs, ys, label=label, marker="os^vD<>ph"[i % 9], s=30, alpha=0.8)
    if teacher:
        ax.scatter([teacher["along"][-1]["recall_kl"]], [100 * teacher["along"][-1]["precision"]], marker="*",
                   s=220, c="k", label="teacher")
    ax.set(xlabel="KL(p_true || q) per token, nats (lower = better recall)", ylabel="grammatical samples, %",
           title=title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def budget_plot(lines: dict, path: str) -> bool:
    """rv-1+ - fw-1 in grammatical points and in KL(p_true || q), with 95% intervals, against the budget on a
    log axis, one line per student size. lines: {size label: [(steps, comparison)]}."""
    plt = _plt()
    if plt is None or not lines:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key in zip(axes, KEYS):
        for i, (label, pts) in enumerate(lines.items()):
            pts = sorted(pts)
            x = [s * (1 + 0.03 * (i - len(lines) / 2)) for s, _ in pts]  # a small offset keeps the bars apart
            mid = [c[key][0] for _, c in pts]
            err = [[m - c[key][1] for m, (_, c) in zip(mid, pts)], [c[key][2] - m for m, (_, c) in zip(mid, pts)]]
            ax.errorbar(x, mid, yerr=err, marker="o", capsize=3, label=label)
        ax.axhline(0, c="grey", lw=0.8)
        ax.set(xscale="log", xlabel="budget, optimizer steps (each a full schedule)",
               ylabel=f"rv-1+ - fw-1, {KEYS[key][0]}")
        steps = sorted({k for pts in lines.values() for k, _ in pts})
        ax.set_xticks(steps, [str(k) for k in steps])  # the budgets themselves, no minor ticks
        ax.minorticks_off()
    axes[0].legend(fontsize=8)
    fig.suptitle("Synthetic language: reverse minus forward KL against the budget, by student size")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def students_table(runs: dict, keys: list, t_kl: float) -> list:
    md = ["| student | steps | seeds | lr | " + " | ".join(name for _, name, _ in MEASURES) +
          " | × teacher's KL | val CE | grammatical % by seed |", "|---|---|---|---|" + "---|" * (len(MEASURES) + 3)]
    for size, cell, steps in keys:
        g = runs[(size, cell, steps)]
        kl = S.pooled_mean(items(g, "recall_kl"))
        md.append(f"| {cell} | {steps} | {len(g)} | {next(iter(g.values()))['lr']:g} | "
                  + " | ".join(cell_text(g, k, s) for k, _, s in MEASURES)
                  + f" | {kl / t_kl:.1f} | {np.mean([r['val_loss'] for r in g.values()]):.3f} | "
                  + ", ".join(f"{100 * np.nanmean(x):.1f}" for x in items(g, "precision")) + " |")
    return md


def comparison_rows(runs: dict, size: str, pairs: list, budgets: list) -> tuple:
    """Markdown rows of A - B at each budget with its verdict and anchor, and {(a, b): {steps: comparison}}."""
    md, found = [], {}
    for a, b, label in pairs:
        for steps in budgets:
            if runs.get((size, a, steps)) and runs.get((size, b, steps)):
                c = compare(runs[(size, a, steps)], runs[(size, b, steps)])
                found.setdefault((a, b), {})[steps] = c
                md.append(f"| {label} | {a} - {b} | {steps} | {c['seeds']} | {diff_text(c, 'precision')} | "
                          f"{diff_text(c, 'recall_kl')} | {c['verdict']} | {c['anchor']} |")
    return md, found


COMPARE_HEAD = ["| comparison | A - B | steps | seeds | grammatical, points | KL(p_true‖q), nats/token | verdict | "
                "anchor favoured |", "|---|---|---|---|---|---|---|---|"]


def report(work_dir: str, out_path: str, header: str = "") -> str:
    runs = load_runs(work_dir)
    if not runs:
        raise ValueError(f"no measured run under {work_dir}/runs: run `bash run_all.sh` first")
    here = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(here, exist_ok=True)  # the pictures are written before the report
    stem = os.path.splitext(out_path)[0]
    teacher_dirs = sorted(d for d in os.listdir(work_dir) if d.startswith("teacher-") and d.endswith("-synthetic")
                          and os.path.isfile(os.path.join(work_dir, d, "eval", "measures.json")))
    teacher = load_json(os.path.join(work_dir, teacher_dirs[0], "eval", "measures.json")) if teacher_dirs else {}
    t_kl = teacher["along"][-1]["recall_kl"] if teacher else float("nan")
    main = max({s for s, c, _ in runs if c == "rv-1+"} or {s for s, _, _ in runs},
               key=lambda s: sum(1 for k in runs if k[0] == s))  # the size with the most runs
    asked = [c for pair in QUESTION for c in pair[:2]]
    budgets = sorted({n for s, c, n in runs if s == main and c in ("rv-1+", "fw-1")})
    both = [n for n in budgets if all(runs.get((main, c, n)) for c in asked)] or budgets  # the question's B, 2B
    b, b2 = both[0], next((n for n in both if n == 2 * both[0]), None)
    n = next(iter(next(iter(runs.values())).values()))["n"]
    md = [header, "## Is the reverse-KL student more precise and less covering? (synthetic language, NOT BabyLM)", "",
          f"Every student is scored on {n} samples at temperature 1 at the end of its run. Precision: the share of "
          "samples the grammar can produce. Recall: KL(p_true‖q) per token on held-out sentences of the grammar "
          "(lower is better: a positive difference means A covers the language worse). Each difference A - B is "
          "paired by seed (A's and B's seed i share initial weights and data order) with a 95% bootstrap interval "
          "over seeds and samples; `~` marks an interval that holds 0 (within noise).", ""]
    if teacher:
        md += [f"Teacher ({teacher_dirs[0]}): grammatical {100 * teacher['along'][-1]['precision']:.1f}%, "
               f"KL(p_true‖p_T) {t_kl:.4f} nats/token.", ""]
    # the answer
    rows, found = comparison_rows(runs, main, QUESTION, [x for x in (b, b2) if x])
    md += [f"### The answer at {main}, {b}{f' and {b2}' if b2 else ''} steps", ""] + COMPARE_HEAD + rows + [""]
    for (a, bb), at in found.items():
        if b in at and b2 in at:
            md.append(f"- {a} - {bb}: {stability(at[b], at[b2])} from {b} to {b2} steps.")
    for (a, bb), at in found.items():
        widest = {k: max(half_width(c, k) for c in at.values()) for k in KEYS}
        met = all(widest[k] <= TARGET[k] for k in KEYS)
        md.append(f"- {a} - {bb}: intervals at most ±{widest['precision']:.1f} points and ±{widest['recall_kl']:.4f} "
                  f"nats, against the targets ±{TARGET['precision']:g} and ±{TARGET['recall_kl']:g}: "
                  f"**{'met' if met else 'NOT met'}**.")
    md.append("")
    # the students
    keys = sorted(((s, c, k) for s, c, k in runs if s == main and c in asked and k in (b, b2)),
                  key=lambda x: (asked.index(x[1]), x[2]))
    md += [f"### The question's students at {main}", ""] + students_table(runs, keys, t_kl)
    # convergence by a fixed tolerance, over each doubling
    md += ["", f"### Convergence: the move over each doubling of the budget against a fixed tolerance "
               f"({TOLERANCE['precision']:g} point, {TOLERANCE['recall_kl']:g} nats)", "",
           "| size | student | steps | grammatical move, points | KL(p_true‖q) move | converged |", "|---|---|---|---|---|---|"]
    for size, cell, steps in sorted(runs, key=lambda x: (int(x[0][1:]), x[1], x[2])):
        if runs.get((size, cell, steps // 2)) and steps % 2 == 0:
            moves, ok = converged(runs[(size, cell, steps // 2)], runs[(size, cell, steps)])
            md.append(f"| {size} | {cell} | {steps // 2} → {steps} | {moves['precision']:+.1f} | "
                      f"{moves['recall_kl']:+.4f} | {'yes' if ok else 'no'} |")
    md += full_sections(runs, work_dir, main, b, b2, stem, here, t_kl)
    md += control_section(work_dir)
    png = stem + "_pr.png"
    groups = {f"{c}, {k}": runs[(main, c, k)] for c in ("fw-1", "rv-1+", "a-fw", "a-rv") for k in (b, b2)
              if runs.get((main, c, k))}
    if pr_plot(groups, teacher, png, f"Synthetic language at {main}: precision against recall, one point a seed"):
        md += ["", f"![precision against recall]({os.path.relpath(png, here)})"]
    text = "\n".join(md) + "\n"
    import model as M
    M.atomic_write(out_path, text.encode())
    return text


def full_sections(runs: dict, work_dir: str, main: str, b: int, b2: int, stem: str, here: str, t_kl: float) -> list:
    """SCALE=full's sections, each where its runs exist: the sweep, the paper's variants, the ladder, the sizes
    and longer budgets (with the picture of rv - fw against the budget), the windows check."""
    md = []
    rates = {c: sweep(os.path.join(work_dir, "runs", main), c) for c in ("fw-1", "rv-1+", "a-fw", "a-rv")}
    if any(rates.values()):
        lrs = sorted({lr for r in rates.values() for lr in r}, key=float)
        md += ["", f"### Learning rates (sweep at {main}, {b} steps, mean validation CE over its seeds)", "",
               "| cell | " + " | ".join(f"lr {lr}" for lr in lrs) + " | chosen |", "|---|" + "---|" * (len(lrs) + 1)]
        for c, r in rates.items():
            if r:
                md.append(f"| {c} | " + " | ".join(f"{r[lr]:.4f}" if lr in r else "-" for lr in lrs)
                          + f" | {min(r, key=r.get)} |")
    budgets = [x for x in (b, b2) if x]
    rows, _ = comparison_rows(runs, main, CLAIMS, budgets)
    if rows:
        keys = [(main, c, k) for c in PAPER for k in budgets if runs.get((main, c, k))]
        md += ["", f"### The paper's six variants at {main}", ""] + students_table(runs, keys, t_kl)
        md += ["", f"### The paper's claims at {main}", ""] + COMPARE_HEAD + rows
    ladder = [(a, bb, f"{r}: {what}") for r, what, a, bb in LADDER]
    rows, _ = comparison_rows(runs, main, ladder, budgets)
    extra = sorted({c for s, c, k in runs if s == main and k in budgets and c not in PAPER + ["a-fw", "a-rv"]
                    and not c.endswith("-random")})
    if extra:  # rungs beyond the question's (a and e+)
        md += ["", f"### The ablation ladder at {main}: reverse minus forward KL, one ingredient at a time", ""]
        md += students_table(runs, [(main, c, k) for c in extra for k in budgets if runs.get((main, c, k))],
                             t_kl) + [""] + COMPARE_HEAD + rows
    # sizes and budgets
    lines = {}
    for size in sorted({s for s, _, _ in runs}, key=lambda s: int(s[1:])):
        steps = sorted(k for s, c, k in runs if s == size and c == "fw-1" and runs.get((size, "rv-1+", k)))
        if steps:
            params = next(iter(runs[(size, "fw-1", steps[0])].values())).get("params", 0)
            lines[f"{size} ({params:,} params)"] = [(k, compare(runs[(size, "rv-1+", k)], runs[(size, "fw-1", k)]))
                                                   for k in steps]
    if len(lines) > 1 or any(len(v) > 2 for v in lines.values()):
        md += ["", "### rv-1+ - fw-1 by student size and budget", "",
               "| size | steps | seeds | fw-1 KL(p_true‖q) | grammatical, points | KL(p_true‖q), nats/token | verdict | "
               "anchor favoured |", "|---|---|---|---|---|---|---|---|"]
        for label, pts in lines.items():
            size = label.split()[0]
            for k, c in pts:
                kl = S.pooled_mean(items(runs[(size, "fw-1", k)], "recall_kl"))
                md.append(f"| {label} | {k} | {c['seeds']} | {kl:.4f} | {diff_text(c, 'precision')} | "
                          f"{diff_text(c, 'recall_kl')} | {c['verdict']} | {c['anchor']} |")
        common = sorted(set.intersection(*[{k for k, _ in pts} for pts in lines.values()]))
        if len(lines) > 2 and common:
            k = common[-1]
            trend = gkd_trend([(int(label.split("(")[1].split()[0].replace(",", "")), c) for label, pts in lines.items()
                               for kk, c in pts if kk == k])
            md += ["", f"Agarwal et al. (GKD), the difference narrows as the student grows (at {k} steps, the "
                       f"largest budget every size has): **{trend}**."]
        png = stem + "_budget.png"
        if budget_plot(lines, png):
            md += ["", f"![rv-1+ - fw-1 against the budget]({os.path.relpath(png, here)})"]
    # the windows check
    wk = sorted(k for s, c, k in runs if s == main and c == "fw-1-random" and runs.get((main, "rv-1+-random", k)))
    if wk and runs.get((main, "fw-1", wk[-1])) and runs.get((main, "rv-1+", wk[-1])):
        k = wk[-1]
        pairs = [("rv-1+", "fw-1", "shared windows (offset 0, the cache)"),
                 ("rv-1+-random", "fw-1-random", "a fresh random offset per epoch"),
                 ("fw-1-random", "fw-1", "random - shared, fw-1"), ("rv-1+-random", "rv-1+", "random - shared, rv-1+")]
        rows, _ = comparison_rows(runs, main, pairs, [k])
        md += ["", f"### Windows: the shared windows of the teacher cache against a fresh random offset per epoch "
                   f"({main}, {k} steps)", ""] + COMPARE_HEAD + rows
    return md


def more_seeds(work_dir: str) -> list:
    """(size, cell, steps, seed range) of the groups that need more seeds: the two cells of every comparison the
    report makes (the question, the paper's claims, the ladder, rv-1+ - fw-1 at every size and budget) whose
    interval is wider than the answer's targets, each given as many seeds again as the comparison pairs (seeds
    a cell already has are skipped by the run). A comparison with a single-step cell is left as it is (its step
    costs 5-8 teacher-forced ones, and seeds added to the other side alone pair with nothing)."""
    runs, out = load_runs(work_dir), {}
    pairs = [(a, b) for a, b, _ in QUESTION + CLAIMS] + [(a, b) for _, _, a, b in LADDER]
    pairs = [(a, b) for a, b in pairs if a not in SINGLE_STEP and b not in SINGLE_STEP]
    for size, cell, steps in list(runs):
        for a, b in pairs:
            if cell == a and runs.get((size, b, steps)):
                c = compare(runs[(size, a, steps)], runs[(size, b, steps)])
                if any(half_width(c, k) > TARGET[k] for k in KEYS):
                    for key in ((size, a, steps), (size, b, steps)):
                        out[key] = max(out.get(key, 0), c["seeds"])
    return [(size, cell, steps, f"{n}-{2 * n - 1}") for (size, cell, steps), n in sorted(out.items())]


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


@guard
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default="out")
    p.add_argument("--out", default="results/synthetic.md")
    p.add_argument("--header-file", default="", help="Markdown put at the top (command, date, machine)")
    p.add_argument("--best-lr", nargs=2, metavar=("SIZE_DIR", "CELL"), help="print the sweep's learning rate")
    p.add_argument("--more-seeds", action="store_true", help="print `size cell steps seeds` of each group whose "
                                                             "comparisons need more seeds (run_all.sh SCALE=full)")
    a = p.parse_args(argv)
    if a.best_lr:
        return print(best_lr(*a.best_lr))
    if a.more_seeds:
        return print("".join(" ".join(map(str, g)) + "\n" for g in more_seeds(a.work_dir)), end="")
    header = open(a.header_file).read() if a.header_file else "# Results (synthetic)\n"
    report(a.work_dir, a.out, header)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
