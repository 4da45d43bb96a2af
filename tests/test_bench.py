"""bench.py prints one line per configuration with its throughput and peak fraction (tiny sizes here)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_prints_a_line_per_configuration():
    out = subprocess.run([sys.executable, "bench.py", "--student", "debug", "--teacher", "debug", "--teacher2",
                          "debug-gpt2", "--batches", "2", "--dtypes", "fp32", "--objectives", "rv", "--chunks", "0",
                          "--teachers", "2", "--caches", "off,exact,compact", "--only", "distill,peer,score",
                          "--steps", "1", "--pairs", "50"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and lines[0].startswith("# cpu") and "GFLOP/s" in lines[1], out.stderr[-1000:]
    rows = [dict(kv.split("=", 1) for kv in line.split()) for line in lines[2:]]
    assert [(r["step"], r.get("cache")) for r in rows] == [("distill", "off"), ("distill", "exact"),
                                                           ("distill", "compact"), ("peer", None), ("score", None)]
    assert all(float(r["tokens_per_s"]) > 0 and 0 < float(r["peak_frac"]) < 1.5 for r in rows[:4])
    assert all(float(r["build_tok_s"]) > 0 for r in rows[1:3]) and "build_tok_s" not in rows[0]
    # the FLOPs a cache leaves: both teachers' heads (exact) or nothing of the teachers (compact)
    flops = [float(r["gflop_per_token"]) for r in rows[:3]]
    assert flops[0] > flops[1] > flops[2] and rows[3]["teachers"] == "1"
    assert float(rows[4]["pairs_per_s"]) > 0


def test_synthetic_rows_time_the_default_step_before_and_after():
    out = subprocess.run([sys.executable, "bench.py", "--synthetic", "--students", "baby-llama-syn-d4", "--threads", "1",
                          "--variants", "fw-1,rv-1", "--steps", "2"], cwd=ROOT, capture_output=True, text=True,
                         timeout=180)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and "seq 64, vocab 512" in lines[0], out.stderr[-1000:]
    rows = [dict(kv.split("=", 1) for kv in line.split()) for line in lines[2:]]
    assert [(r["variant"], r["path"], r["cache"]) for r in rows] == [
        ("fw-1", "before", "off"), ("fw-1", "after", "exact"), ("rv-1", "before", "off"), ("rv-1", "after", "off")]
    assert all(float(r["tokens_per_s"]) > 0 and 0 < float(r["peak_frac"]) < 1.5 for r in rows)
    # the cache leaves the teacher's head: fewer model FLOPs per token for the teacher-forced row only
    assert float(rows[1]["mflop_per_token"]) < float(rows[0]["mflop_per_token"])
    assert rows[2]["mflop_per_token"] == rows[3]["mflop_per_token"]
