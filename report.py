"""results.md over every evaluated run in a work folder: the paper's Tables 2 and 3 beside ours, the paper's
claims tested with paired bootstrap intervals, the mode-seeking measures and the loss curves.

    python report.py --work-dir out --out results.md

Plots are written when matplotlib is installed (a test requirement, optional for users).
"""
import argparse
import csv
import json
import os

import numpy as np

import model as M
from evaluate import fmt, read_jsonl, table_rows



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


def load_json(path: str):
    with open(path) as f:
        return json.load(f)


def read_csv(path: str) -> list:
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
        rows = read_jsonl(log)
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


def paper_section(work_dir: str, out_path: str) -> list:
    """Tables 2 and 3 beside the paper's, the claims with bootstrap intervals (real data)."""
    here = os.path.dirname(os.path.abspath(__file__))
    paper2, paper3 = read_csv(os.path.join(here, "paper_table2.csv")), read_csv(os.path.join(here, "paper_table3.csv"))
    variants = [c for c in paper2[0] if c.startswith("ChooBaCa")]
    runs = {}
    for v in variants + [v.replace("-24", "-syn") for v in variants if "-24" in v]:
        path = os.path.join(work_dir, v, "eval", "results.json")
        if os.path.isfile(path):
            runs[v] = load_json(path)
    ours = {v: r for v, r in runs.items()}
    tag = "syn" if any("-syn" in v for v in runs) else "24"
    shown = [v for v in variants if v.replace("-24", "-" + tag) in runs or "-23" in v]
    col = {v: v.replace("-24", "-" + tag) for v in shown}
    if not runs:
        return []
    md = ["## Table 3: averages (ours / paper)", "",
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
        runs[d] = load_json(os.path.join(work_dir, d, "eval", "results.json"))
    if extra:
        md += ["", "## Beyond the paper: other objectives (Table 3 layout)", "",
               "| model | BLiMP | BLiMP suppl. | EWoK | GLUE | Macro | val loss |", "|---|---|---|---|---|---|---|"]
        for d in extra:
            sc = runs[d]["scores"]
            md.append(f"| {d} | " + " | ".join(fmt(100 * sc[k] if k in sc else None) for k in
                                                ("blimp", "blimp_supplement", "ewok", "glue", "macroaverage"))
                      + f" | {runs[d].get('val_loss') or float('nan'):.3f} |")
    diag = {v: m["diagnostics"] for v in runs if os.path.isfile(p := os.path.join(work_dir, v, "eval", "measures.json"))
            and "diagnostics" in (m := load_json(p))}
    if diag:
        keys = list(next(iter(diag.values())))
        md += ["", "## Mode-seeking diagnostics (dev set, against teacher 1; samples at temperature 1)", "",
               "| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        md += [f"| {v} | " + " | ".join(f"{d[k]:.3f}" for k in keys) + " |" for v, d in sorted(diag.items())]
    skipped = sorted({t for r in ours.values() for t in r.get("glue_skipped", {})})
    departures = sorted({d for r in ours.values() for d in r.get("departures", [])})
    if departures or skipped:
        md += ["", "Departures in this run: " + "; ".join(departures) + "."]
    rejected = sorted(v for v, r in ours.items() if any(d.startswith("not evaluated") for d in r.get("departures", [])))
    if rejected:
        md += ["", f"**Warning:** the official collector would reject the predictions file of {', '.join(rejected)} "
                   "(tasks missing; see each run's eval/predictions.meta.json)."]
    return md


# ---------------------------------------------------------------------------------------------------------
# the synthetic experiment: mode seeking against the true language (measures.py), seeds pooled


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


def synthetic_runs(work_dir: str) -> dict:
    """{label: [measures.json of each seed]}, label "rv-1+" or "rv-1+ (T=1)", from every run folder whose
    config says synthetic; a run's last validation loss rides along."""
    groups = {}
    for d in sorted(os.listdir(work_dir)):
        cfg_path, m_path = os.path.join(work_dir, d, "config.json"), os.path.join(work_dir, d, "eval", "measures.json")
        if not (os.path.isfile(cfg_path) and os.path.isfile(m_path)):
            continue
        cfg = load_json(cfg_path)
        if cfg.get("data") != "synthetic" or not cfg.get("variant"):
            continue
        label = cfg["variant"].replace("ChooBaCa-", "").replace("-syn", "")
        label += "" if cfg.get("temperature", 2.0) == 2.0 else f" (T={cfg['temperature']:g})"
        m = load_json(m_path)
        val = [r["val_loss"] for r in read_jsonl(os.path.join(work_dir, d, "log.jsonl")) if "val_loss" in r]
        m["val_loss"], m["seed"] = (val[-1] if val else float("nan")), cfg.get("seed", 0)
        groups.setdefault(label, []).append(m)
    return groups


def _items(runs: list, key: str) -> list:
    return [np.array([np.nan if v is None else v for v in r["final"][key]], dtype=float) for r in runs]


def _cell(runs: list, key: str, scale: float) -> str:
    from measures import bootstrap_mean, interval
    items = _items(runs, key)
    if np.isnan(np.concatenate(items)).all():  # e.g. no grammatical sample at all: no log p_true to average
        return "-"
    mean = np.nanmean(np.concatenate(items))
    lo, hi = interval(bootstrap_mean(items))
    d = 1 if scale == 100 else 3
    return f"{scale * mean:.{d}f} [{scale * lo:.{d}f}, {scale * hi:.{d}f}]"


def verdict(a: list, b: list) -> tuple:
    """(cells, one-line verdict) for A - B on precision and on KL(p_true || q), 95% bootstrap intervals."""
    from measures import bootstrap_mean, interval
    cells, sign = [], {}
    for key, scale in (("precision", 100.0), ("recall_kl", 1.0)):
        ia, ib = _items(a, key), _items(b, key)
        diff = np.nanmean(np.concatenate(ia)) - np.nanmean(np.concatenate(ib))
        lo, hi = interval(bootstrap_mean(ia, seed=1) - bootstrap_mean(ib, seed=2))
        sign[key] = 0 if lo <= 0 <= hi else (1 if diff > 0 else -1)
        digits = 1 if scale == 100 else 3
        cells.append(f"{scale * diff:+.{digits}f} [{scale * lo:+.{digits}f}, {scale * hi:+.{digits}f}]"
                     + (" ~" if sign[key] == 0 else ""))
    p, k = sign["precision"], sign["recall_kl"]  # k > 0: A covers the language worse (lower recall)
    words = {(1, 1): "the mode-seeking signature: higher precision, lower recall",
             (-1, -1): "the mass-covering signature: lower precision, higher recall",
             (1, -1): "better on both: higher precision and higher recall",
             (-1, 1): "worse on both: lower precision and lower recall",
             (0, 0): "within noise on both"}
    text = words.get((p, k)) or (f"precision within noise, {'lower' if k > 0 else 'higher'} recall" if p == 0 else
                                 f"{'higher' if p > 0 else 'lower'} precision, recall within noise")
    return cells, text


def pr_plot(groups: dict, teacher: dict, path: str) -> bool:
    """Precision (grammatical %) against recall, as KL(p_true || q) per token (left is better), one point per
    run and seed, the teacher a star; PNG when matplotlib is installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
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


def synthetic_section(work_dir: str, out_path: str) -> list:
    groups = synthetic_runs(work_dir)
    if not groups:
        return []
    teacher_dirs = [d for d in sorted(os.listdir(work_dir)) if d.startswith("teacher-") and d.endswith("-synthetic")
                    and os.path.isfile(os.path.join(work_dir, d, "eval", "measures.json"))]
    teacher = load_json(os.path.join(work_dir, teacher_dirs[0], "eval", "measures.json")) if teacher_dirs else {}
    order = [v for v in PAPER_ORDER if v in groups] + sorted(v for v in groups if v not in PAPER_ORDER)
    n = next(iter(groups.values()))[0]["n"]
    md = ["## The synthetic experiment: is the reverse-KL student mode-seeking? (synthetic language, NOT BabyLM)", "",
          f"Every student is scored on {n} samples (temperature 1) at its last step; each cell is the mean with a 95% "
          "bootstrap interval over seeds and samples. Precision: the share of samples the grammar can produce, and "
          "their true log-probability per token. Recall: KL(p_true‖q) per token on held-out sentences of the grammar "
          "(lower is better). KLs to the teacher are sequence-level Monte Carlo estimates, per token.", ""]
    if teacher:
        t = teacher["along"][-1]
        md += [f"Teacher ({teacher_dirs[0]}): grammatical {100 * t['precision']:.1f}%, KL(p_true‖p_T) "
               f"{t['recall_kl']:.4f} nats/token on held-out sentences (its NLL minus the true entropy "
               f"{teacher.get('true_entropy', float('nan')):.3f} nats/token), minimal pairs "
               f"{100 * t.get('minimal_pairs', float('nan')):.1f}%.", ""]
    md += ["| student | seeds | " + " | ".join(name for _, name, _ in MEASURES) + " | grammatical % by seed | "
           "distinct-2 | minimal pairs % | val loss |", "|---|---|" + "---|" * (len(MEASURES) + 4)]
    for v in order:
        runs = sorted(groups[v], key=lambda r: r["seed"])
        last = [r["along"][-1] for r in runs]
        md.append(f"| {v} | {len(runs)} | " + " | ".join(_cell(runs, k, s) for k, _, s in MEASURES) +
                  " | " + ", ".join(f"{100 * x['precision']:.1f}" for x in last) +
                  f" | {np.mean([x['distinct_2'] for x in last]):.3f} | "
                  f"{100 * np.mean([x.get('minimal_pairs', np.nan) for x in last]):.1f} | "
                  f"{np.mean([r['val_loss'] for r in runs]):.3f} |")
    md += ["", "### Verdicts", "", "A - B; `~` marks an interval that contains 0 (within noise). Recall is measured "
           "as KL(p_true‖q), so a positive difference there means A covers the language worse.", "",
           "| claim | A - B | grammatical, points | KL(p_true‖q) | verdict |", "|---|---|---|---|---|"]
    for label, a, b in SYN_CLAIMS:
        if a in groups and b in groups:
            cells, text = verdict(groups[a], groups[b])
            md.append(f"| {label} | {a} - {b} | {cells[0]} | {cells[1]} | {text} |")
    steps = sorted({row["step"] for runs in groups.values() for r in runs for row in r["along"]})
    md += ["", "### Along training (means over seeds)", "",
           "Grammatical % / KL(p_true‖q) / KL(q‖p_T) at each snapshot.", "",
           "| student | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for v in order:
        cells = []
        for s in steps:
            rows = [row for r in groups[v] for row in r["along"] if row["step"] == s]
            cells.append("-" if not rows else f"{100 * np.mean([x['precision'] for x in rows]):.1f} / "
                         f"{np.mean([x['recall_kl'] for x in rows]):.3f} / {np.mean([x['reverse_kl'] for x in rows]):.3f}")
        md.append(f"| {v} | " + " | ".join(cells) + " |")
    control = os.path.join(work_dir, "positive_control.json")
    if os.path.isfile(control):
        c = load_json(control)
        mean = {o: {k: np.mean([r[k] for r in c[o]]) for k in c[o][0]} for o in c}
        ok = mean["rv"]["precision"] > mean["fw"]["precision"] and mean["rv"]["forward_kl"] > mean["fw"]["forward_kl"]
        md += ["", "### Positive control (known answer)", "",
               "A teacher whose next token after c is c + 1 or c + 8 (0.49 each) and a student with a 2-dimensional "
               "hidden state, trained through distill.py's step (pure KD, T = 1, 300 steps, 3 seeds). Precision: the "
               "student's mass on the teacher's two modes.", "",
               "| objective | precision | KL(p_T‖q) | KL(q‖p_T) |", "|---|---|---|---|"]
        md += [f"| {o} | {100 * mean[o]['precision']:.1f}% | {mean[o]['forward_kl']:.3f} | {mean[o]['reverse_kl']:.3f} |"
               for o in ("fw", "rv")]
        md += ["", f"Reverse KL came out with higher precision and lower recall than forward KL: **{'yes' if ok else 'NO'}**."]
    png = os.path.splitext(out_path)[0] + "_pr.png"
    if pr_plot(groups, teacher, png):
        md += ["", f"![precision vs recall]({os.path.relpath(png, os.path.dirname(os.path.abspath(out_path)))})"]
    return md


def report(work_dir: str, out_path: str, header: str = "") -> str:
    md = [header] + synthetic_section(work_dir, out_path) + paper_section(work_dir, out_path)
    plots = plot_curves(work_dir, sorted(d for d in os.listdir(work_dir) if d.startswith("ChooBaCa-")),
                        os.path.join(work_dir, "plots"))
    if plots:  # named, not embedded: the PNGs stay in the (ignored) work folder
        md += ["", f"Loss curves of every run: {len(plots)} PNG files in `{os.path.join(work_dir, 'plots')}/`."]
    text = "\n".join(md) + "\n"
    M.atomic_write(out_path, text.encode())
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default="out", help="the folder run_all.sh wrote (default out)")
    p.add_argument("--out", default="results.md", help="the report (default results.md)")
    p.add_argument("--header-file", default="", help="Markdown put at the top (command, date, machine)")
    a = p.parse_args(argv)
    header = "# Results\n"
    if a.header_file:
        with open(a.header_file) as f:
            header = f.read()
    report(a.work_dir, a.out, header)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
