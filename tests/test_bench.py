"""bench.py prints one line per configuration with its throughput and peak fraction (tiny sizes here)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_prints_a_line_per_configuration():
    out = subprocess.run([sys.executable, "bench.py", "--student", "debug", "--teacher", "debug", "--batches", "2",
                          "--dtypes", "fp32", "--objectives", "fw,rv", "--chunks", "0", "--only", "distill,score",
                          "--steps", "1", "--pairs", "50"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and lines[0].startswith("# cpu"), out.stderr[-1000:]
    rows = [dict(kv.split("=", 1) for kv in line.split()) for line in lines[1:]]
    assert [(r["step"], r.get("objective")) for r in rows] == [("distill", "fw"), ("distill", "rv"), ("score", None)]
    assert all(float(r["tokens_per_s"]) > 0 and 0 < float(r["peak_frac"]) < 1.5 for r in rows[:2])
    assert float(rows[2]["pairs_per_s"]) > 0
