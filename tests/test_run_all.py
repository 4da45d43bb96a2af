"""run_all.sh end to end on the synthetic default at the tiny scale: every stage runs, the report holds the
answer (both comparisons at B and 2B with their verdicts, stability, the interval targets), every student,
the convergence check, the positive control and the picture; a second run skips finished stages; SCALE=full's
stage list (a dry run, nothing written); bad settings are one clear line."""
import json
import os
import re
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


def test_tiny_run_writes_the_answer(tiny):
    tmp, first = tiny
    head = first.stdout.splitlines()
    assert head[0].startswith("run_all.sh: SCALE=tiny on synthetic: teacher llama-syn, students of size d32; 16 "
                              "distillation runs (fw-1, rv-1+, a-fw and a-rv x 2 seeds at 8 and 16 steps)")
    assert "about 1 minutes here" in head[1]
    md = (tmp / "results.md").read_text()
    assert md.startswith("# Results (tiny scale)") and "AMD" in md or "Intel" in md or "cores" in md
    assert "under " + str(tmp / "out") in md  # the disk the run left
    assert "### The answer at d32, 8 and 16 steps" in md
    for a, b in (("rv-1+", "fw-1"), ("a-rv", "a-fw")):
        for steps in (8, 16):
            assert f"| {a} - {b} | {steps} | 2 |" in md
        assert f"- {a} - {b}: " in md and " from 8 to 16 steps." in md  # the stability call
    assert md.count("against the targets ±3 and ±0.01:") == 2  # one line per comparison
    assert "### The question's students at d32" in md and md.count("| d32 | ") == 4  # the convergence check, per cell
    assert "higher precision and lower recall than forward KL: **yes**" in md  # the positive control
    assert (tmp / "results_pr.png").is_file() and "](results_pr.png)" in md
    done = set(os.listdir(tmp / "out" / ".done"))
    assert {"data", "teacher_llama-syn", "cache", "measures_teacher", "control",
            "runs_d32_rv-1+_b16_s0-1", "runs_d32_a-fw_b8_s0-1"} <= done
    cfg = json.loads((tmp / "out" / "runs" / "d32" / "a-rv" / "b8-s1" / "config.json").read_text())
    assert (cfg["objective"], cfg["alpha"], cfg["temperature"], cfg["mixing"], cfg["single_step"], cfg["lr"],
            cfg["preset"], cfg["window_offset"], cfg["teacher_cache"]) == \
        ("rv", 0.0, 1.0, False, False, 0.01, "baby-llama-syn", 0, "exact")
    rv = json.loads((tmp / "out" / "runs" / "d32" / "rv-1+" / "b16-s0" / "config.json").read_text())
    assert (rv["variant"], rv["max_steps"], rv["warmup"], rv["seed"]) == ("ChooBaCa-rv-1-syn+", 16, 1, 0)
    assert len(os.listdir(tmp / "out" / "teacher-cache")) == 2  # one cache (and its lock) for every seed


def test_second_run_skips_finished_stages(tiny):
    tmp, _ = tiny
    again = run_all(tmp, SCALE="tiny")
    assert again.returncode == 0, again.stderr[-2000:]
    ran = [line for line in again.stdout.splitlines() if line.startswith("== ") and not line.endswith("skipped")]
    assert ran[-1].startswith("== done in")  # every stage skipped; the report is written again
    assert len([line for line in again.stdout.splitlines() if line.endswith("done before, skipped")]) == 5 + 8


def test_full_scale_stage_list(tmp_path):
    """SCALE=full, dry: the sweep, both teachers, every variant and rung at B and 2B, the other sizes at three
    budgets, the main size to 8B, the windows check; nothing is written."""
    r = run_all(tmp_path, SCALE="full", DRY_RUN="1")
    assert r.returncode == 0, r.stderr[-2000:]
    stages = [line[3:].split(":")[0] for line in r.stdout.splitlines() if line.startswith("== ")]
    assert stages[:3] == ["data", "teacher llama-syn", "teacher gpt2-syn"] and "cache" in stages
    assert sum(s.startswith("sweep d32/") for s in stages) == 16
    for cell in ("fw-1", "rv-1+", "a-fw", "a-rv"):  # the question: every seed
        assert f"runs d32/{cell}/b2000 s0-9" in stages and f"runs d32/{cell}/b1000 s0-9" in stages
    for cell in ("fw-2", "rv-2+", "b-fw", "b-rv", "c-rv", "d-fw", "d-rv"):
        assert f"runs d32/{cell}/b2000 s0-4" in stages and f"runs d32/{cell}/b1000 s0-4" in stages  # half
    for cell in ("rv-1", "rv-2", "ap-fw", "ap-rv"):  # single step: 3 seeds
        assert f"runs d32/{cell}/b2000 s0-2" in stages and f"runs d32/{cell}/b1000 s0-2" in stages
    for size in ("d4", "d8", "d16", "d64"):
        assert [f"runs {size}/{c}/b{k} s0-4" in stages for k in (1000, 2000) for c in ("fw-1", "rv-1+")] == [True] * 4
    assert "runs d32/rv-1+/b8000 s0-4" in stages and "runs d32/fw-1-random/b2000 s0-4" in stages
    assert not any(s.startswith("runs") and s.endswith(("s5-9", "s10-19")) for s in stages)  # no round of more seeds
    seeds = re.findall(r"^== (?:runs|sweep) .*--seeds (\d+)-(\d+)", r.stdout, re.M)
    assert f"; {sum(int(b) - int(a) + 1 for a, b in seeds)} distillation runs (" in r.stdout  # as announced
    assert stages[-1] == "report" and not (tmp_path / "out").exists()


def test_full_scale_reuses_its_list_of_more_seeds(tmp_path):
    """The round of more seeds is listed once (out/more_seeds.tsv); a rerun runs that list, not a fresh one that
    would double the seeds again."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "more_seeds.tsv").write_text("d16 fw-1 2000 5-9\nd32 a-rv 1000 10-19\n")
    r = run_all(tmp_path, SCALE="full", DRY_RUN="1")
    assert r.returncode == 0, r.stderr[-2000:]
    stages = [line[3:].split(":")[0] for line in r.stdout.splitlines() if line.startswith("== ")]
    assert stages[-3:] == ["runs d16/fw-1/b2000 s5-9", "runs d32/a-rv/b1000 s10-19", "report"]
    assert os.listdir(tmp_path / "out") == ["more_seeds.tsv"]


def test_bad_settings_are_one_clear_line(tmp_path):
    r = run_all(tmp_path, SCALE="huge")
    assert r.returncode == 2 and r.stderr.strip() == \
        "run_all.sh: unknown SCALE=huge (use synthetic, full, tiny, cpu or paper)"
    r = run_all(tmp_path, SCALE="cpu")
    assert r.returncode == 2 and "needs BabyLM data" in r.stderr and r.stderr.count("\n") == 1
    bad = run_all(tmp_path, SCALE="tiny", TEACHER_CACHE="yes")
    assert bad.returncode == 2 and bad.stderr.strip() == "run_all.sh: bad TEACHER_CACHE=yes (use off, exact or compact)"
    assert not (tmp_path / "out").exists()
