"""lab/bench.py prints one line per configuration with its throughput and peak fraction (tiny sizes here)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(*args):
    out = subprocess.run([sys.executable, "-m", "lab.bench", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=180)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and lines, out.stderr[-1000:]
    return lines, [dict(kv.split("=", 1) for kv in line.split()) for line in lines[2:]]


def test_bench_prints_a_line_per_configuration():
    lines, rows = bench("--student", "debug", "--teacher", "debug", "--teacher2", "debug-gpt2", "--batches", "2",
                        "--dtypes", "fp32", "--objectives", "rv", "--chunks", "0", "--teachers", "2", "--caches",
                        "off,exact,compact", "--losses", "readable", "--only", "distill,peer,score", "--steps", "1",
                        "--pairs", "50")
    assert lines[0].startswith("# cpu") and "GFLOP/s" in lines[1] and "AVX" in lines[1] + "AMX"
    assert [(r["step"], r.get("cache")) for r in rows] == [("distill", "off"), ("distill", "exact"),
                                                           ("distill", "compact"), ("peer", None), ("score", None)]
    assert all(float(r["tokens_per_s"]) > 0 and 0 < float(r["peak_frac"]) < 1.5 for r in rows[:4])
    assert all(float(r["build_tok_s"]) > 0 for r in rows[1:3]) and "build_tok_s" not in rows[0]
    # the FLOPs a cache leaves: both teachers' heads (exact) or nothing of the teachers (compact)
    flops = [float(r["gflop_per_token"]) for r in rows[:3]]
    assert flops[0] > flops[1] > flops[2] and rows[3]["teachers"] == "1"
    assert float(rows[4]["pairs_per_s"]) > 0


def test_synthetic_rows_time_the_default_step_both_loss_paths():
    lines, rows = bench("--synthetic", "--sizes", "d4", "--threads", "1", "--cells", "fw-1,rv-1", "--steps", "2")
    assert "seq 64, vocab 105" in lines[0]
    assert [(r["cell"], r["loss"], r["cache"]) for r in rows] == [
        ("fw-1", "readable", "exact"), ("fw-1", "fused", "exact"), ("rv-1", "readable", "off"), ("rv-1", "fused", "off")]
    assert all(float(r["tokens_per_s"]) > 0 and 0 < float(r["peak_frac"]) < 1.5 for r in rows)
    # the cache leaves the teacher's head: fewer model FLOPs per token for the teacher-forced rows
    assert float(rows[0]["mflop_per_token"]) < float(rows[2]["mflop_per_token"])
    assert rows[0]["mflop_per_token"] == rows[1]["mflop_per_token"]


def test_machine_line_names_the_cpu_kind():
    out = subprocess.run([sys.executable, "-m", "lab.bench", "--machine"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and any(k in out.stdout for k in ("AMX", "AVX-512", "AVX2", "no AVX2"))
    assert "matmul fp32" in out.stdout and "torch" in out.stdout
