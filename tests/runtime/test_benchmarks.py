"""The benchmarks keep working: ``make bench`` is never run by ``make test``, so a short
pipeline run checks that the proxy core answers every request of every benchmarked protocol
through in-memory transports (the script asserts it) and reports a figure for each."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pipeline_bench_answers_every_request():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "pipeline_bench.py"), "--rounds", "20"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[2:]]
    assert [" ".join(r[:-2]) for r in rows] == [
        "bolt 128 B", "bolt 1 KiB", "dubbo", "thrift", "memcached",
    ]  # fmt: skip
    for row in rows:
        assert float(row[-2]) > 0 and float(row[-1]) > 0
