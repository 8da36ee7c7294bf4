"""The benchmark scripts still run (tiny sizes, one timed call); their numbers are not checked here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_blur_runs_and_the_two_forms_agree():
    args = ["--batch", "2", "--size", "32", "--iters", "1"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_blur.py"), *args],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    assert float(re.search(r"max difference ([0-9.e+-]+)", out).group(1)) < 1e-5
    assert len(re.findall(r"fused \(stride\)\s+[0-9.]+ ms\s+x[0-9.]+", out)) == 2  # blur alone and the whole step


def test_bench_library_threads_runs_and_prints_the_ratio():
    args = ["--steps", "1", "--rows", "cli", "library"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_library_threads.py"), *args],
        capture_output=True, text=True, check=True, timeout=600,
    ).stdout  # fmt: skip
    assert re.search(r"^cli\s+[0-9.]+\s+1\.00x$", out, re.M)
    assert re.search(r"^library\s+[0-9.]+\s+[0-9.]+x$", out, re.M)
