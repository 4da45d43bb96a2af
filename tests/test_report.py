"""report.py: the paired bootstrap on cases with a known sign, the claim rows, the paper's tables and the
loss-curve plots."""
import json
import os

import numpy as np
import pytest

import report as R

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_paired_bootstrap_has_the_known_sign():
    rng = np.random.default_rng(0)
    a = {"t1": "".join(rng.choice(["0", "1"], 400, p=[0.2, 0.8])), "t2": "1" * 300}
    b = {"t1": "".join(rng.choice(["0", "1"], 400, p=[0.5, 0.5])), "t2": "1" * 300}
    boot = R.paired_bootstrap(a, b)
    assert np.percentile(boot, 2.5) > 0 and abs(boot.mean() - 0.5 * (0.3 + 0.0)) < 0.05  # t2 ties: 0
    same = R.paired_bootstrap(a, a)
    assert np.all(same == 0)


def test_claim_rows_mark_noise_and_signs():
    items = lambda p: {"blimp": {"x": p}, "blimp_supplement": {"x": p}, "ewok": {"x": p}, "glue": {"x": p}}  # noqa
    score = lambda v: {"blimp": v, "blimp_supplement": v, "ewok": v, "glue": v, "macroaverage": v}  # noqa
    runs = {"ChooBaCa-rv-1-24": {"items": items("1" * 200), "scores": score(1.0)},
            "ChooBaCa-fw-1-24": {"items": items("0" * 200), "scores": score(0.0)}}
    rows = R.claim_rows(runs, "24")
    assert len(rows) == 1 and rows[0].startswith("| reverse vs forward KL (one teacher) |")
    assert "+100.0 [+100.0, +100.0]" in rows[0] and "~" not in rows[0]


def test_paper_tables_are_read_whole():
    t2 = R.read_csv(os.path.join(HERE, "paper_table2.csv"))
    t3 = R.read_csv(os.path.join(HERE, "paper_table3.csv"))
    assert len(t2) == 39 and {"benchmark", "task", "ChooBaCa-rv-1-24+"} <= set(t2[0])
    assert {r["model"] for r in t3} >= {"Baby Llama", "LTG-BERT", "ChooBaCa-fw-1-24"}


def test_loss_curve_plots(tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "ChooBaCa-rv-1-24"
    run.mkdir()
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"step": 1, "loss": 3.0, "ce": 5.0, "kd": 1.0}, {"step": 2, "loss": 2.5, "ce": 4.5, "kd": 0.5},
        {"step": 2, "val_loss": 4.6})))
    files = R.plot_curves(str(tmp_path), ["ChooBaCa-rv-1-24", "missing"], str(tmp_path / "plots"))
    assert files == [str(tmp_path / "plots" / "ChooBaCa-rv-1-24.png")]
    assert open(files[0], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
