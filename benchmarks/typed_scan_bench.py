"""What a compiled, C-typed scan would gain: bolt's scan written by hand in Cython
(benchmarks/typed_scan.pyx, an experiment, not the product) against the generated scan,
alone (timeit) and in pipeline_bench's proxy (the protocol's scan replaced), same run.

Run: .venv/bin/python benchmarks/typed_scan_bench.py (needs Cython and gcc: make bench
installs Cython from constraints.txt). Not run by make test.
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import uvloop  # noqa: E402

import pipeline_bench as pb  # noqa: E402
from protoc_x.loader import builtin_protocols  # noqa: E402

SETUP = """\
from setuptools import setup
from Cython.Build import cythonize
setup(ext_modules=cythonize(["typed_scan.pyx"], quiet=True))
"""


def build(where: Path):
    """typed_scan.pyx compiled in ``where``: the module."""
    (where / "typed_scan.pyx").write_text((HERE / "typed_scan.pyx").read_text())
    (where / "setup.py").write_text(SETUP)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=where,
                   check=True, capture_output=True)  # fmt: skip
    (so,) = where.glob("typed_scan*.so")
    spec = importlib.util.spec_from_file_location("typed_scan", so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pipeline(rounds: int) -> float:
    return uvloop.run(pb.proxied("bolt", 128, 16, 8, rounds))


def main() -> int:
    proto = builtin_protocols()["bolt"]
    template = pb.request_template(proto, 128)
    template.set_request_id(7)
    request = template.encode()
    response = pb.answers(proto, request)
    with tempfile.TemporaryDirectory() as tmp:
        typed = build(Path(tmp))
    for frame in (request, response):  # (the comparison is fair only if they agree)
        assert typed.scan(frame, 0) == proto.scan(frame, 0), frame
    print("µs per call (timeit, best of 5 × 100,000)")
    for name, frame in (("request 128 B", request), ("response", response)):
        row = []
        for scan in (proto.scan, typed.scan):
            best = min(timeit.repeat(lambda: scan(frame, 0), number=100_000, repeat=5))
            row.append(best * 10)
        print(f"  scan {name:14} generated {row[0]:.2f}  typed {row[1]:.2f}")
    generated, with_typed = [], []
    for _ in range(3):  # taking turns, medians
        proto.__dict__.pop("scan", None)
        generated.append(pipeline(2000))
        proto.scan = typed.scan  # (the instance's: the runtime calls proto.scan)
        with_typed.append(pipeline(2000))
    proto.__dict__.pop("scan", None)
    hand = statistics.median(uvloop.run(pb.hand_written(128, 16, 8, 2000)) for _ in range(3))
    g, t = statistics.median(generated), statistics.median(with_typed)
    print(f"pipeline_bench bolt 128 B, µs per request: generated scan {g:.2f} ({g / hand:.2f}x"
          f" the hand-written {hand:.2f}), typed scan {t:.2f} ({t / hand:.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
