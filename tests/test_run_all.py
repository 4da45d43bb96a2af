"""run_all.sh end to end on the synthetic default at the tiny scale: every stage runs, results.md holds the
precision/recall table, the verdicts and the positive control; a second run skips finished stages; bad
settings are one clear line."""
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_all(tmp_path, **env):
    env = {**os.environ, "WORK": str(tmp_path / "out"), "RESULTS": str(tmp_path / "results.md"), **env}
    env.pop("BABYLM_DIR", None)  # the no-data default, whatever this machine holds
    env.pop("BABYLM_2023_DIR", None)
    return subprocess.run(["bash", "run_all.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run_all")
    first = run_all(tmp, SCALE="tiny")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    return tmp, first


def test_tiny_run_writes_the_synthetic_report(tiny):
    tmp, first = tiny
    assert first.stdout.startswith("run_all.sh: SCALE=tiny on synthetic")  # says what it will do, first
    assert "about 1.5 minutes" in first.stdout and "teacher cache exact" in first.stdout.splitlines()[0]
    md = (tmp / "results.md").read_text()
    for heading in ("## The synthetic experiment", "### Learning rates", "### Convergence", "### The ablation ladder",
                    "### The paper's variants: verdicts", "### Capacity", "### Positive control"):
        assert heading in md
    for v in ("fw-1", "fw-2", "rv-1", "rv-2", "rv-1+", "rv-2+", "ap-fw", "ap-rv"):
        assert f"\n| {v} | 1 | 0.03 | " in md  # one row per student, one seed at this scale, the swept rate
    assert "| reverse vs forward KL (one teacher) | rv-1 - fw-1 | 8 |" in md  # by budget: 8, 4 and 1 steps
    assert "| reverse vs forward KL (one teacher) | rv-1 - fw-1 | 1 |" in md
    assert "| a' | pure KD, T = 1, on the student's own samples" in md and "| d4 | 4,268 |" in md
    assert "higher precision and lower recall than forward KL: **yes**" in md
    assert os.path.isfile(tmp / "results_capacity.png") == os.path.isfile(tmp / "results_pr.png")
    done = set(os.listdir(tmp / "out" / ".done"))
    assert {"data_synthetic", "teacher_llama-syn_synthetic", "distill_runs_d8_rv-1+_b8-s0",
            "measures_runs_d4_fw-1_b4-s0", "measures_teacher", "positive_control"} <= done
    assert "distill_runs_d8_sweep-fw-1-lr3e-2_b8-s0" in done and "measures_runs_d8_sweep-fw-1-lr3e-2_b8-s0" not in done
    log = (tmp / "out" / "logs" / "distill_runs_d8_fw-2_b8-s0.log").read_text()
    assert "teacher cache exact, fixed windows True" in log
    ap = json.loads((tmp / "out" / "runs" / "d8" / "ap-rv" / "b8-s0" / "config.json").read_text())
    assert (ap["objective"], ap["alpha"], ap["temperature"], ap["sample_from"], ap["single_step"], ap["mixing"],
            ap["lr"], ap["preset"]) == ("rv", 0.0, 1.0, "student", True, False, 0.03, "baby-llama-syn-d8")
    b = json.loads((tmp / "out" / "runs" / "d4" / "rv-1+" / "b4-s0" / "config.json").read_text())
    assert (b["variant"], b["max_steps"], b["preset"]) == ("ChooBaCa-rv-1-syn+", 4, "baby-llama-syn-d4")


def test_second_run_skips_finished_stages_and_long_adds_runs(tiny):
    """Run again with LONG=1: what finished is skipped, fw-1 and rv-1+ run at 2, 4 and 8 times the budget."""
    tmp, _ = tiny
    again = run_all(tmp, SCALE="tiny", LONG="1")
    assert again.returncode == 0, again.stderr[-2000:]
    skipped = [line for line in again.stdout.splitlines() if line.endswith("done before, skipped")]
    # data, teachers, the sweep (2), 6 paper variants x 3 budgets, 2 ladder cells and 2 at d4 x 2 budgets, the
    # measures of every run but the sweep's and of the teacher, the control
    assert len(skipped) == 1 + 2 + 2 + 18 + 8 + (18 + 8 + 1) + 1
    ran = [line.split()[2].rstrip(":") for line in again.stdout.splitlines()
           if line.startswith("== distill runs/") and not line.endswith("skipped")]
    assert sorted(ran) == [f"runs/d8/{v}/b{k}-s0" for v in ("fw-1", "rv-1+")
                                                       for k in (16, 32, 64)]
    md = (tmp / "results.md").read_text()
    assert "### Where the verdict leads: fw-1 and rv-1+ at d8 up to 64 steps (LONG=1)" in md
    assert "| 64 | rv-1+ - fw-1 |" in md and "### Every student at d8, 8 steps" in md


def test_bad_settings_are_one_clear_line(tmp_path):
    r = run_all(tmp_path, SCALE="huge")
    assert r.returncode == 2 and r.stderr.strip() == \
        "run_all.sh: unknown SCALE=huge (use synthetic, capacity, tiny, cpu or paper)"
    r = run_all(tmp_path, SCALE="cpu")
    assert r.returncode == 2 and "needs BabyLM data" in r.stderr and r.stderr.count("\n") == 1
    bad = run_all(tmp_path, SCALE="tiny", TEACHER_CACHE="yes")
    assert bad.returncode == 2 and bad.stderr.strip() == \
        "run_all.sh: unknown TEACHER_CACHE=yes (use off, exact or compact)"
