"""The benchmarks keep working: ``make bench`` is never run by ``make test``, so a short
pipeline run checks that the proxy core (and the hand-written baseline) answers every request
of every benchmarked protocol through in-memory transports (the script asserts it) and reports
a figure for each."""

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
    rows = {}
    for line in out.stdout.splitlines()[2:]:
        name, figures = line[:12].strip(), line[12:].split()
        rows[name] = figures
    assert list(rows) == ["bolt 128 B", "bolt 1 KiB", "dubbo", "thrift", "memcached"]
    for name, figures in rows.items():
        assert float(figures[0]) > 0  # protoc-x µs per request
        if name.startswith("bolt"):  # and the hand-written proxy's, with the ratio
            assert float(figures[1]) > 0 and figures[2].endswith("x")


def test_measured_bench_decodes_its_messages_and_reports_each():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "measured_bench.py"), "--rounds", "20"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr  # (it asserts each message decodes whole)
    rows = [line.rsplit(None, 4) for line in out.stdout.splitlines()[1:]]
    assert [r[0].strip() for r in rows] == ["56 B, 1 + 1 values", "978 B, 50 + 50 values", "9928 B, 500 + 500 values"]  # fmt: skip
    for _, unframed, framed, ratio, walk in rows:
        assert float(unframed) > 0 and float(framed) > 0 and ratio.endswith("x") and float(walk) > 0
