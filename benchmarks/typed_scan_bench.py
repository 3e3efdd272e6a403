"""Bolt's scan three ways, alone (timeit) and in pipeline_bench's proxy (the protocol's scan
replaced), same run: the codec's Python scan (generated/bolt.py), the generated typed scan the
runtime uses where the package is compiled (typed/bolt.pyx, protoc-x build --typed typed),
and the same scan written by hand in Cython (benchmarks/typed_scan.pyx, not the product: the
bound a generated one could reach).

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
from protoc_x import loader  # noqa: E402
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


def _give(proto, scan, bolt) -> bool:
    """``proto``'s scan for the pipeline: bolt's is ``scan``, the others' their own."""
    if proto is bolt:
        proto.scan = scan  # (the runtime calls proto.scan)
    return True


def main() -> int:
    proto = builtin_protocols()["bolt"]
    generated = proto.__dict__.pop("scan", None)  # (the loader's typed scan, if compiled)
    if generated is None:
        print("the runtime is not compiled: no typed scan to measure")
        return 1
    python = proto.scan
    template = pb.request_template(proto, 128)
    template.set_request_id(7)
    request = template.encode()
    response = pb.answers(proto, request)
    with tempfile.TemporaryDirectory() as tmp:
        hand = build(Path(tmp)).scan
    scans = {"python": python, "typed": generated, "hand": hand}
    for frame in (request, response):  # (the comparison is fair only if they agree)
        assert hand(frame, 0) == generated(frame, 0) == python(frame, 0), frame
    print("µs per call (timeit, best of 5 × 100,000)")
    for name, frame in (("request 128 B", request), ("response", response)):
        row = []
        for scan in scans.values():
            best = min(timeit.repeat(lambda: scan(frame, 0), number=100_000, repeat=5))
            row.append(f"{best * 10:.2f}")
        print(f"  scan {name:14} " + "  ".join(f"{k} {v}" for k, v in zip(scans, row)))
    runs: dict[str, list[float]] = {k: [] for k in scans}
    typed_scan = loader.use_typed_scan
    for _ in range(3):  # taking turns, medians
        for name, scan in scans.items():
            # (the proxy's loader gives bolt its scan: this one, as the instance's)
            loader.use_typed_scan = lambda module, p, scan=scan: _give(p, scan, proto)
            runs[name].append(pipeline(2000))
    loader.use_typed_scan = typed_scan
    proto.scan = generated
    floor = statistics.median(uvloop.run(pb.hand_written(128, 16, 8, 2000)) for _ in range(3))
    print(f"pipeline_bench bolt 128 B, µs per request (the hand-written proxy: {floor:.2f}):")
    for name, values in runs.items():
        m = statistics.median(values)
        print(f"  with the {name} scan {m:.2f} ({m / floor:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
