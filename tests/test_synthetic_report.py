"""lab/synthetic_report.py: the convergence check against its fixed tolerance, the paired comparisons, their
verdicts, stability and anchors on cases whose answer is known, the learning-rate choice, the groups that need
more seeds, and the report over small runs/ trees (the default's and SCALE=full's)."""
import json
import os

import numpy as np
import pytest

from lab import synthetic_report as SR


def run(precision: float, kl: float, seed: int = 0, n: int = 400, noise: float = 0.02, lr: float = 0.01,
        exact: bool = False) -> dict:
    """A measures.json: Bernoulli precision items and noisy KL items, or with `exact` constant items whose
    means are exactly `precision` and `kl`."""
    rng = np.random.default_rng(seed)
    if exact:
        final = {"precision": [precision] * n, "recall_kl": [kl] * n}
    else:
        final = {"precision": (rng.random(n) < precision).astype(float).tolist(),
                 "recall_kl": (kl + noise * rng.standard_normal(n)).tolist()}
    for key in ("true_logp", "reverse_kl", "forward_kl", "entropy"):
        final[key] = (1.0 + noise * rng.standard_normal(n)).tolist()
    return {"final": final, "along": [{"precision": precision, "recall_kl": kl}], "n": n, "val_loss": 1.0, "lr": lr,
            "params": 1000}


def group(precision, kl, seeds=3, offset=0, **kw) -> dict:
    return {s: run(precision, kl, s + offset, **kw) for s in range(seeds)}


def test_convergence_is_a_fixed_tolerance_just_inside_and_just_outside():
    """Moves under 1 point and 0.005 nats are converged, at any number of seeds (more seeds never fail it)."""
    short = group(0.700, 0.0500, exact=True)
    moves, ok = SR.converged(short, group(0.7099, 0.0549, exact=True))
    assert ok and moves["precision"] == pytest.approx(0.99) and moves["recall_kl"] == pytest.approx(0.0049)
    assert not SR.converged(short, group(0.7101, 0.0500, exact=True))[1]  # 1.01 points
    assert SR.converged(short, group(0.700, 0.0451, exact=True))[1]  # KL alone: -0.0049 is within ...
    assert not SR.converged(short, group(0.700, 0.0449, exact=True))[1]  # ... -0.0051 is not
    assert SR.converged(group(0.7, 0.05, seeds=30, exact=True), group(0.705, 0.052, seeds=30, exact=True))[1]


def test_comparison_is_paired_by_seed_with_its_verdict_and_anchor():
    """Seeds far apart but A = B + 20 points within each seed: paired, the interval is tight around +20."""
    a = {s: run(0.3 + 0.2 * s + 0.2, 0.10, exact=True) for s in range(3)}
    b = {s: run(0.3 + 0.2 * s, 0.10, exact=True) for s in range(3)}
    c = SR.compare(a, b)
    assert c["seeds"] == 3 and c["precision"] == pytest.approx((20.0, 20.0, 20.0))
    assert c["signs"] == (1, 0) and c["verdict"] == "higher precision, recall within noise"
    seeking = SR.compare(group(0.9, 0.30, offset=10), group(0.6, 0.10))
    assert seeking["verdict"] == "the mode-seeking signature: higher precision, lower recall"
    assert seeking["anchor"] == "the paper: mode-seeking" and 25 < seeking["precision"][0] < 35
    same = SR.compare(group(0.6, 0.10, offset=20, n=4000), group(0.6, 0.10, n=4000))  # narrow: about ±1.5
    assert same["verdict"] == "within noise on both" and same["anchor"] == "Wu et al.: the same student"
    wide = SR.compare(group(0.6, 0.10, offset=20, n=40), group(0.6, 0.10, n=40))  # 40 items a seed: about ±15
    assert wide["signs"] == (0, 0) and wide["anchor"] == "undecided: intervals wider than the targets"
    assert SR.diff_text(same, "precision").endswith("~")
    assert SR.compare({0: run(0.5, 0.1), 5: run(0.5, 0.1)}, group(0.5, 0.1))["seeds"] == 1  # common seeds only


def test_anchors_and_verdicts_of_every_sign_pair():
    assert SR.anchor(1, 1) == "the paper: mode-seeking"
    assert SR.anchor(-1, -1) == "Wu et al.: forward fits the head, reverse the tail"
    assert SR.anchor(0, 0) == "Wu et al.: the same student"
    assert SR.anchor(0, 0, narrow=False) == "undecided: intervals wider than the targets"  # a wide 0 decides nothing
    assert SR.anchor(1, 1, narrow=False) == "the paper: mode-seeking"  # a sign that excludes 0 holds anyway
    for p, k in ((1, -1), (-1, 1), (0, 1), (1, 0), (0, -1), (-1, 0)):
        assert SR.anchor(p, k) == "none of the three in full"
    assert SR.verdict_words(-1, 1) == "worse on both: lower precision and lower recall"
    assert SR.verdict_words(0, 1) == "precision within noise, lower recall"
    assert SR.verdict_words(-1, 0) == "lower precision, recall within noise"


def test_stability_says_how_far_a_verdict_moves():
    first = {"precision": (2.0, 0.0, 4.0), "recall_kl": (0.010, 0.005, 0.015)}
    assert SR.stability(first, {"precision": (3.0, 1.0, 5.0), "recall_kl": (0.012, 0.008, 0.016)}) == "stable"
    moved = SR.stability(first, {"precision": (6.0, 5.0, 7.0), "recall_kl": (0.012, 0.008, 0.016)})
    assert moved == "moves by +4.0 points"


def write_run(root, size, cell, steps, seed, r, val_loss=None):
    d = os.path.join(root, "runs", size, cell, f"b{steps}-s{seed}")
    os.makedirs(os.path.join(d, "eval"))
    json.dump(r, open(os.path.join(d, "eval", "measures.json"), "w"))
    json.dump({"lr": r["lr"]}, open(os.path.join(d, "config.json"), "w"))
    with open(os.path.join(d, "log.jsonl"), "w") as f:
        f.write(json.dumps({"step": steps, "val_loss": 9.0}) + "\n")
        f.write(json.dumps({"step": steps, "val_loss": val_loss if val_loss is not None else r["val_loss"]}) + "\n")


def test_best_lr_is_the_lowest_mean_validation_ce(tmp_path):
    for lr, v in (("3e-3", (1.9, 1.9)), ("1e-2", (1.6, 1.85)), ("3e-2", (1.7, 1.7))):
        for seed in range(2):
            write_run(str(tmp_path), "d8", f"sweep-fw-1-lr{lr}", 8, seed, run(0.5, 0.1), val_loss=v[seed])
    assert SR.best_lr(str(tmp_path / "runs" / "d8"), "fw-1") == "3e-2"  # 1e-2's mean is 1.725, not its 1.6
    with pytest.raises(ValueError, match="no finished sweep"):
        SR.best_lr(str(tmp_path / "runs" / "d8"), "rv-1+")


def teacher(root):
    os.makedirs(os.path.join(root, "teacher-llama-syn-synthetic", "eval"))
    json.dump({"along": [{"precision": 0.95, "recall_kl": 0.025}]},
              open(os.path.join(root, "teacher-llama-syn-synthetic", "eval", "measures.json"), "w"))


def test_default_report_over_a_runs_tree(tmp_path):
    """The default's tree: four cells at B and 2B. The answer's rows, verdicts, anchors, stability, the
    interval targets, every student, the convergence check and the picture."""
    root = str(tmp_path)
    for steps in (4, 8):
        for seed in range(3):
            write_run(root, "d16", "fw-1", steps, seed, run(0.7, 0.05, seed, n=2000))
            write_run(root, "d16", "rv-1+", steps, seed, run(0.9, 0.15, seed + 5, n=2000))  # mode-seeking
            write_run(root, "d16", "a-fw", steps, seed, run(0.7, 0.05, seed + 7, exact=True))
            write_run(root, "d16", "a-rv", steps, seed, run(0.7 if steps == 4 else 0.5, 0.05, seed + 9, exact=True))
    teacher(root)
    md = SR.report(root, str(tmp_path / "results.md"))
    assert "### The answer at d16, 4 and 8 steps" in md
    row = next(line for line in md.splitlines() if line.startswith("| the paper's best recipe") and "| 8 |" in line)
    assert "| rv-1+ - fw-1 | 8 | 3 | +20" in row and row.endswith("| the mode-seeking signature: higher precision, "
                                                                   "lower recall | the paper: mode-seeking |")
    assert "- rv-1+ - fw-1: stable from 4 to 8 steps." in md
    assert "- a-rv - a-fw: moves by -20.0 points from 4 to 8 steps." in md
    assert "- rv-1+ - fw-1: intervals at most ±" in md and md.count("against the targets ±3 and ±0.01: **met**") == 2
    assert "### The ablation ladder" not in md  # the question's rungs only: no ladder section
    assert "| rv-1+ | 8 | 3 | 0.01 | 90." in md and "| 6.0 | 1.000 |" in md  # 0.15 is 6x the teacher's 0.025
    assert "| d16 | a-rv | 4 → 8 | -20.0 |" in md and md.count("| yes |") == 3  # a-rv moved: the others did not
    assert (tmp_path / "results_pr.png").stat().st_size > 1000 and "](results_pr.png)" in md
    assert "### Learning rates" not in md and "### rv-1+ - fw-1 by student size" not in md  # SCALE=full only


def test_full_report_adds_sizes_budgets_claims_ladder_and_windows(tmp_path):
    root = str(tmp_path)
    for seed in range(2):
        for size, gap in (("d4", 0.10), ("d16", 0.05), ("d64", 0.0)):  # the difference narrows as the size grows
            for steps in (4, 8, 16):
                write_run(root, size, "fw-1", steps, seed, run(0.7, 0.05, seed, exact=True))
                write_run(root, size, "rv-1+", steps, seed, run(0.7 + gap, 0.05 + gap, seed, exact=True))
        for steps in (4, 8):
            for cell in ("a-fw", "a-rv", "rv-1", "fw-2", "rv-2", "rv-2+", "b-fw", "b-rv"):
                write_run(root, "d16", cell, steps, seed, run(0.7, 0.05, seed, n=2000))
        write_run(root, "d16", "fw-1-random", 8, seed, run(0.7, 0.05, seed, n=2000))
        write_run(root, "d16", "rv-1+-random", 8, seed, run(0.7, 0.05, seed + 3, n=2000))
        for lr in ("0.01", "0.03"):
            write_run(root, "d16", f"sweep-fw-1-lr{lr}", 4, seed, run(0.5, 0.1))
    teacher(root)
    md = SR.report(root, str(tmp_path / "results.md"))
    assert "### Learning rates (sweep at d16, 4 steps" in md and "| fw-1 | 1.0000 | 1.0000 | 0.01 |" in md
    assert "### The paper's claims at d16" in md and "| rv-1 - fw-1 | 8 |" in md
    assert "### The ablation ladder at d16" in md and "| b-rv - b-fw | 4 |" in md
    sizes = md.split("### rv-1+ - fw-1 by student size and budget")[1]
    assert "| d4 (1,000 params) | 16 | 2 | 0.0500 | +10.0 [+10.0, +10.0] | +0.100" in sizes
    assert "| d64 (1,000 params) | 16 | 2 | 0.0500 | +0.0 [+0.0, +0.0] ~ |" in sizes
    assert "the difference narrows as the student grows (at 16 steps" in sizes and "**yes**" in sizes
    assert "### Windows: the shared windows" in md and "| rv-1+-random - fw-1-random | 8 |" in md
    assert (tmp_path / "results_budget.png").stat().st_size > 1000 and "](results_budget.png)" in md


def test_gkd_trend_needs_the_difference_to_narrow_with_size():
    wide, narrow = SR.compare(group(0.9, 0.15, exact=True), group(0.7, 0.05, exact=True)), \
        SR.compare(group(0.71, 0.05, exact=True), group(0.7, 0.05, exact=True))
    assert SR.gkd_trend([(100, wide), (1000, narrow)]) == "yes"
    assert SR.gkd_trend([(100, narrow), (1000, wide)]) == "no"
    noisy, noisier = SR.compare(group(0.71, 0.05), group(0.70, 0.05, offset=3)), \
        SR.compare(group(0.73, 0.05), group(0.70, 0.05, offset=3))  # 400 samples a seed: both hold 0
    assert noisier["signs"] == noisy["signs"] == (0, 0)
    assert SR.gkd_trend([(100, noisier), (1000, noisy)]) == "no: within noise at every size"


def test_more_seeds_for_the_cells_of_wide_comparisons(tmp_path):
    root = str(tmp_path)
    for seed in range(3):
        write_run(root, "d16", "fw-1", 8, seed, run(0.7, 0.05, seed))
        write_run(root, "d16", "rv-1+", 8, seed, run(0.7, 0.05, seed + 3))  # 400 items a seed: wider than ±3
        write_run(root, "d16", "a-fw", 8, seed, run(0.7, 0.05, seed, exact=True))
        write_run(root, "d16", "a-rv", 8, seed, run(0.7, 0.05, seed, exact=True))  # no noise: narrow
        write_run(root, "d8", "fw-1", 8, seed, run(0.7, 0.05, seed))
        write_run(root, "d8", "rv-1", 8, seed, run(0.7, 0.05, seed + 3))  # wide, but rv-1 is single-step
        write_run(root, "d4", "rv-1+", 8, seed, run(0.7, 0.05, seed + 3))
    for seed in range(6):  # d4's fw-1 has 6 seeds, rv-1+ 3: the comparison pairs 3, so both go to 6
        write_run(root, "d4", "fw-1", 8, seed, run(0.7, 0.05, seed))
    assert SR.more_seeds(root) == [("d16", "fw-1", 8, "3-5"), ("d16", "rv-1+", 8, "3-5"),
                                   ("d4", "fw-1", 8, "3-5"), ("d4", "rv-1+", 8, "3-5")]


def test_the_report_s_single_step_cells_are_the_experiment_s():
    """SINGLE_STEP (no second round of seeds) names exactly the cells whose resolved distill.py config samples."""
    import distill as DS
    from lab.experiment import CELLS, config
    sampling = {c for c in CELLS if DS.resolve_variant(config(c, "d32", 10, 0, 0.01, "o", "w", "d")).single_step}
    assert sampling == set(SR.SINGLE_STEP)
