"""The real-data report over every evaluated run in a work folder: the paper's Tables 2 and 3 beside ours, the
paper's claims tested with paired bootstrap intervals, the per-token diagnostics (when lab/measures.py wrote
them) and the loss curves.

    python report.py --work-dir out --out results.md

Plots are written when matplotlib is installed (a test requirement, optional for users).
"""
import argparse
import csv
import json
import os

import numpy as np

import model as M
from data import read_jsonl
from evaluate import fmt, table_rows
from stats import paired_bootstrap


def load_json(path: str):
    with open(path) as f:
        return json.load(f)


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


def report(work_dir: str, out_path: str, header: str = "") -> str:
    md = [header] + paper_section(work_dir, out_path)
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
