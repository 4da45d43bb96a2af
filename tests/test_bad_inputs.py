"""The bad-input table (docs/running.md "Bad input"): each command, run as a user runs it, gives exit code 2, one
`error:` (or `run_all.sh:`) line on stderr, no traceback, and leaves its output location as it was."""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import model as M
import train_teacher as TT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def snapshot(root) -> set:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs + ["."]}


@pytest.fixture(scope="module")
def kit(syn, tmp_path_factory):
    """A trained teacher and student checkpoint on the synthetic corpus, and a scratch folder."""
    root, f = syn
    tmp = tmp_path_factory.mktemp("bad")
    common = dict(f, preset="debug", batch_size=4, max_steps=2, warmup=1)
    teacher = os.path.join(f["work_dir"], "teacher-debug-synthetic-bad-inputs")
    TT.train(TT.TrainConfig(**common, out_dir=teacher))
    (tmp / "garbage.pt").write_bytes(b"not a checkpoint")
    (tmp / "a_file").write_text("x")
    return root, f, tmp, os.path.join(teacher, "ckpt_best.pt")


def cases(kit):
    root, f, tmp, ckpt = kit
    data = ["--data", "synthetic", "--data-dir", f["data_dir"], "--work-dir", f["work_dir"], "--vocab-size", "320",
            "--seq-len", "32", "--device", "cpu", "--batch-size", "4", "--max-steps", "2"]
    run = str(tmp / "run")
    py = [sys.executable]
    return [  # (command, environment, the words the line must hold, the location that must stay as it was)
        (["bash", "run_all.sh"], {"SEEDS": "0", "SCALE": "tiny"}, "bad SEEDS=0", tmp / "work"),
        (["bash", "run_all.sh"], {"SEEDS": "1", "SCALE": "tiny"}, "bad SEEDS=1 (use 2 or more", tmp / "work"),
        (["bash", "run_all.sh"], {"JOBS": "abc", "SCALE": "tiny"}, "bad JOBS=abc", tmp / "work"),
        (["bash", "run_all.sh"], {"NPROC": "-1", "SCALE": "tiny"}, "bad NPROC=-1", tmp / "work"),
        (["bash", "run_all.sh"], {"SCALE": "tiny", "RESULTS": str(tmp)}, f"bad RESULTS={tmp}", tmp / "work"),
        (py + ["export.py", ckpt, str(tmp / "a_file")], {}, "is not a folder", tmp),
        (py + ["export.py", ckpt], {}, "usage: python export.py", tmp),
        (py + ["evaluate.py", ckpt, "--eval-dir", str(root / "corpus" / "evaluation_data"), "--tasks", "nonsense"], {},
         "unknown --tasks nonsense", tmp),
        (py + ["evaluate.py", ckpt, "--eval-dir", str(tmp / "none")], {}, "evaluation data not found", tmp),
        (py + ["distill.py", *data, "--preset", "debug", "--objective", "fw", "--teacher-ckpt", str(tmp / "garbage.pt"),
               "--out-dir", run], {}, "is unreadable", tmp),
        (py + ["distill.py", *data, "--preset", "debug", "--temperature", "0", "--out-dir", run], {},
         "--temperature must be positive", tmp),
        (py + ["train_teacher.py", *data, "--preset", "debug", "--batch-size", "0", "--out-dir", run], {},
         "--batch-size 0: must be positive", tmp),
        (py + ["train_teacher.py", *data, "--preset", "debug", "--seq-len", "100000", "--out-dir", run], {},
         "--seq-len 100000", tmp),
        (py + ["train_teacher.py", *data, "--preset", "debug", "--out-dir", str(tmp / "a_file")], {},
         "is a file: give a folder", tmp),
        (py + ["-m", "lab.measures", str(tmp), "--sequences"], {}, "no checkpoint in", tmp),
        (py + ["data.py", "prepare", "--data", "2024", "--data-dir", str(tmp / "none"), "--work-dir", str(tmp / "w")],
         {}, "missing", tmp),
        (py + ["teacher_cache.py", "compare", str(tmp / "none")], {}, "", tmp),
        (py + ["-m", "lab.bench", "--synthetic", "--sizes", "d99"], {}, "unknown size or cell d99", tmp),
        (py + ["-m", "lab.synthetic_report", "--best-lr", str(tmp), "fw-1"], {}, "no finished sweep", tmp),
        (py + ["-m", "lab.synthetic_report", "--work-dir", str(tmp)], {}, "no measured run under", tmp),
        (py + ["-m", "lab.experiment", "run", "--work-dir", str(tmp / "w"), "--cell", "z-rv"], {}, "unknown cell 'z-rv'",
         tmp),
    ]


def test_each_bad_input_is_one_line_exit_2_and_nothing_written(kit):
    """Two at a time (each case is mostly torch's import); nothing may be written by any of them, so each
    folder is compared before and after all cases."""
    _, _, tmp, _ = kit
    todo = cases(kit)
    before = {where: snapshot(where) for _, _, _, where in todo}

    def run(case):
        cmd, env, _, _ = case
        env = {**os.environ, "WORK": str(tmp / "work"), "RESULTS": str(tmp / "results.md"), **env}
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    with ThreadPoolExecutor(2) as pool:
        for (cmd, _, words, _), r in zip(todo, pool.map(run, todo)):
            err = r.stderr.strip()
            assert r.returncode == 2, (cmd, r.returncode, err[-500:])
            assert "\n" not in err and "Traceback" not in err and words in err, (cmd, err[-500:])
            assert err.startswith(("error: ", "run_all.sh: ")), (cmd, err)
    for where, seen in before.items():
        assert snapshot(where) == seen, (where, snapshot(where) ^ seen)


def test_a_failed_export_leaves_no_tmp_folder(tmp_path, monkeypatch):
    import export as X
    import safetensors.torch
    model = M.build_model(M.get_config("debug"))

    def full_disk(*a, **k):
        raise OSError("No space left on device")
    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(OSError, match="No space"):
        X.export_hf(model, str(tmp_path / "hf"))
    assert os.listdir(tmp_path) == []
