"""run_all.sh end to end on the synthetic default at the tiny scale: every stage runs, results.md holds the
precision/recall table, the verdicts and the positive control; a second run skips finished stages; bad
settings are one clear line."""
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
    assert "about 0.5 minutes" in first.stdout
    md = (tmp / "results.md").read_text()
    for heading in ("## The synthetic experiment", "### Verdicts", "### Along training", "### Positive control"):
        assert heading in md
    for v in ("fw-1", "fw-2", "rv-1", "rv-2", "rv-1+", "rv-2+"):
        assert f"\n| {v} | 1 | " in md  # one row per paper variant, one seed at this scale
    assert "| reverse vs forward KL (one teacher) | rv-1 - fw-1 |" in md
    assert "higher precision and lower recall than forward KL: **yes**" in md
    assert "step 2 | step 4" in md  # measured along training, not only at the end
    done = set(os.listdir(tmp / "out" / ".done"))
    assert {"data_synthetic", "teacher_llama-syn_synthetic", "distill_ChooBaCa-rv-1-syn+",
            "measures_ChooBaCa-fw-2-syn", "measures_teacher", "positive_control"} <= done


def test_second_run_skips_finished_stages(tiny):
    tmp, _ = tiny
    again = run_all(tmp, SCALE="tiny")
    assert again.returncode == 0, again.stderr[-2000:]
    skipped = [line for line in again.stdout.splitlines() if line.endswith("done before, skipped")]
    assert len(skipped) == 1 + 2 + 6 + 7 + 1  # data, teachers, students, measures (6 + teacher), control


def test_bad_scale_is_one_clear_line(tmp_path):
    r = run_all(tmp_path, SCALE="huge")
    assert r.returncode == 2 and r.stderr.strip() == "run_all.sh: unknown SCALE=huge (use synthetic, tiny, cpu or paper)"
    r = run_all(tmp_path, SCALE="cpu")
    assert r.returncode == 2 and "needs BabyLM data" in r.stderr and r.stderr.count("\n") == 1


def test_teacher_cache_setting_reaches_every_distillation_run(tiny, tmp_path):
    import shutil
    src, _ = tiny
    shutil.copytree(src / "out", tmp_path / "out")  # data and teachers as they are; students and measures redone
    for marker in os.listdir(tmp_path / "out" / ".done"):
        if marker.startswith(("distill", "measures")):
            os.remove(tmp_path / "out" / ".done" / marker)
    r = run_all(tmp_path, SCALE="tiny", TEACHER_CACHE="exact")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert ", teacher cache exact; then" in r.stdout.splitlines()[0]
    caches = sorted(p.split("-exact-")[0] for p in os.listdir(tmp_path / "out" / "teacher-cache") if "." not in p)
    assert caches == ["teacher-gpt2-syn-synthetic", "teacher-llama-syn-synthetic"]
    log = (tmp_path / "out" / "logs" / "distill_ChooBaCa-fw-2-syn.log").read_text()
    assert "teacher cache exact, fixed windows True" in log
    assert "rv-1-syn: " in (tmp_path / "out" / "logs" / "distill_ChooBaCa-rv-1-syn.log").read_text()
    assert "TEACHER_CACHE=exact bash run_all.sh" in (tmp_path / "results.md").read_text()
    bad = run_all(tmp_path, SCALE="tiny", TEACHER_CACHE="yes")
    assert bad.returncode == 2 and bad.stderr.strip() == \
        "run_all.sh: unknown TEACHER_CACHE=yes (use off, exact or compact)"
