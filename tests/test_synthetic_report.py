"""synthetic_report.py: the convergence check, the learning-rate choice and the A - B cells on cases whose
answer is known, and the section over a small runs/ tree."""
import json
import os

import numpy as np
import pytest

import synthetic_report as SR


def run(precision: float, kl: float, seed: int = 0, n: int = 400, noise: float = 0.02, lr: float = 0.01) -> dict:
    rng = np.random.default_rng(seed)
    final = {"precision": (rng.random(n) < precision).astype(float).tolist(),
             "recall_kl": (kl + noise * rng.standard_normal(n)).tolist()}
    for key in ("true_logp", "reverse_kl", "forward_kl", "entropy"):
        final[key] = (1.0 + noise * rng.standard_normal(n)).tolist()
    return {"final": final, "along": [{"precision": precision, "recall_kl": kl}], "n": n, "seed": seed,
            "val_loss": 1.0, "lr": lr, "params": 1000}


def test_convergence_check_against_the_interval():
    full = [run(0.70, 0.050, s) for s in range(3)]
    moved = [run(0.50, 0.150, s + 10) for s in range(3)]  # far from the B run: not converged
    still = [run(0.70, 0.050, s + 20) for s in range(3)]  # the same distribution: converged
    (g, k), ok = SR.converged(moved, full)
    short, long = (float(x) for x in g[0].split(" → "))
    assert not ok and 45 < short < 55 and 65 < long < 75
    assert SR.converged(still, full)[1]
    assert not SR.converged([run(0.70, 0.080, s + 20) for s in range(3)], full)[1]  # KL alone moved


def test_difference_has_the_known_sign_and_marks_noise():
    a, b = [run(0.8, 0.05, s) for s in range(3)], [run(0.6, 0.05, s + 3) for s in range(3)]
    text, sign = SR.difference(a, b, "precision", 100.0)
    assert sign == 1 and 15 < float(text.split()[0]) < 25 and "~" not in text
    text, sign = SR.difference(a, b, "recall_kl", 1.0)
    assert sign == 0 and text.endswith("~")
    assert SR.difference(b, a, "precision", 100.0)[1] == -1


def write_run(root, size, cell, steps, seed, r, val_loss=None):
    d = os.path.join(root, "runs", size, cell, f"b{steps}-s{seed}")
    os.makedirs(os.path.join(d, "eval"))
    json.dump(r, open(os.path.join(d, "eval", "measures.json"), "w"))
    json.dump({"lr": r["lr"]}, open(os.path.join(d, "config.json"), "w"))
    with open(os.path.join(d, "log.jsonl"), "w") as f:
        f.write(json.dumps({"step": steps, "val_loss": 9.0}) + "\n")
        f.write(json.dumps({"step": steps, "val_loss": val_loss if val_loss is not None else r["val_loss"]}) + "\n")


def test_best_lr_is_the_lowest_final_validation_ce(tmp_path):
    for lr, v in (("3e-3", 1.9), ("1e-2", 1.7), ("3e-2", 1.8)):
        write_run(str(tmp_path), "d8", f"sweep-fw-1-lr{lr}", 8, 0, run(0.5, 0.1), val_loss=v)
    assert SR.best_lr(str(tmp_path / "runs" / "d8"), "fw-1") == "1e-2"
    with pytest.raises(ValueError, match="no finished sweep"):
        SR.best_lr(str(tmp_path / "runs" / "d8"), "rv-1+")


def test_section_over_a_runs_tree(tmp_path):
    root = str(tmp_path)
    for seed in range(2):
        for steps in (8, 4):
            write_run(root, "d8", "fw-1", steps, seed, run(0.7, 0.05, seed))
            write_run(root, "d8", "rv-1+", steps, seed, run(0.9, 0.15, seed + 5))  # the mode-seeking signature
            write_run(root, "d8", "a-fw", steps, seed, run(0.7, 0.05, seed + 7))
            write_run(root, "d8", "a-rv", steps, seed, run(0.7, 0.05, seed + 9))
            write_run(root, "d4", "fw-1", steps, seed, run(0.5, 0.20, seed))
            write_run(root, "d4", "rv-1+", steps, seed, run(0.5, 0.20, seed + 3), val_loss=2.0 + seed)
    os.makedirs(os.path.join(root, "teacher-llama-syn-synthetic", "eval"))
    json.dump({"along": [{"precision": 0.95, "recall_kl": 0.025}], "true_entropy": 1.9},
              open(os.path.join(root, "teacher-llama-syn-synthetic", "eval", "measures.json"), "w"))
    md = "\n".join(SR.synthetic_section(root, str(tmp_path / "results.md")))
    assert "| e+ | the paper's rv-1+" in md and "the mode-seeking signature" in md
    assert "| a | pure KD" in md and "| rv-1+ - fw-1 | 4 |" in md and "| rv-1+ - fw-1 | 8 |" in md
    assert "6 of 6 students converged" in md
    assert "| d4 | 1,000 | 0.19" in md and "| 8.0 |" in md and "### Capacity" in md  # 0.20 is 8x the teacher's
    assert "| 1.000 / 2.500 |" in md  # each objective's final validation CE, the mean over the seeds
    assert "The capacity gap at d8 (1,000 parameters): KL(p_true‖q) per token fw-1 0.049" in md and "(2.0×)" in md
    for png in ("results_capacity.png", "results_pr.png"):  # matplotlib is a requirement: the pictures are drawn
        assert (tmp_path / png).stat().st_size > 1000 and f"]({png})" in md


def test_long_budgets_get_their_own_section(tmp_path):
    """LONG=1 runs fw-1 and rv-1+ beyond the budget: the paper's tables stay at the budget (that of the other
    cells), the long section lists every budget with its convergence check and the capacity multiple."""
    root = str(tmp_path)
    for seed in range(2):
        for steps in (4, 8, 16, 32):
            write_run(root, "d8", "fw-1", steps, seed, run(0.7, 0.05, seed))
            kl = 0.05 if steps < 32 else 0.15  # rv-1+ moves at the last doubling: not converged there
            write_run(root, "d8", "rv-1+", steps, seed, run(0.7, kl, seed + 5))
        for steps in (4, 8):
            write_run(root, "d8", "a-fw", steps, seed, run(0.7, 0.05, seed + 7))
        # WINDOWS_CHECK=1: random windows at 4 times the budget; here fw-1 with random windows covers worse
        write_run(root, "d8", "fw-1-random", 32, seed, run(0.7, 0.15, seed + 9))
        write_run(root, "d8", "rv-1+-random", 32, seed, run(0.7, 0.15, seed + 11))
    os.makedirs(os.path.join(root, "teacher-llama-syn-synthetic", "eval"))
    json.dump({"along": [{"precision": 0.95, "recall_kl": 0.025}], "true_entropy": 1.9},
              open(os.path.join(root, "teacher-llama-syn-synthetic", "eval", "measures.json"), "w"))
    md = "\n".join(SR.synthetic_section(root, str(tmp_path / "results.md")))
    assert "### Every student at d8, 8 steps" in md and "| rv-1+ - fw-1 | 16 |" not in md
    assert "### Where the verdict leads: fw-1 and rv-1+ at d8 up to 32 steps (LONG=1)" in md
    long = md.split("### Where the verdict leads")[1]
    assert "| 4 | fw-1 | " in long and "| - | - | - |" in long  # no half budget below the shortest
    assert "| 32 | fw-1 | " in long and "| 2.0 | " in long  # 0.05 is twice the teacher's 0.025
    rv32 = next(line for line in long.splitlines() if line.startswith("| 32 | rv-1+ |"))
    assert "| 6.0 | " in rv32 and rv32.endswith("| **no** |")
    for row in ("| 8 | fw-1 |", "| 16 | rv-1+ |"):
        assert next(line for line in long.splitlines() if line.startswith(row)).endswith("| yes |")
    assert "| 32 | rv-1+ - fw-1 |" in long and "lower recall" in long.split("| 32 | rv-1+ - fw-1 |")[1]
    # the windows section compares at the random cells' budget, not at the paper's (8 steps)
    win = md.split("### Fixed windows against a fresh random offset per epoch, at d8, 32 steps")[1].split("###")[0]
    rows = {line.split(" | ")[0][2:]: line for line in win.splitlines() if line.startswith("| ")}
    assert rows["fixed"].endswith(" lower recall |") and "within noise on both" in rows["random offsets"]
    assert "within noise on both" in rows["random - fixed, rv-1+"] and rows["random - fixed, fw-1"].endswith(" lower recall |")
