"""``make demo``: compile every spec, then decode a sample frame of each protocol with the
generated codecs and show what each frame means to the proxy."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from runtime.api import Direction

from .cli import frame_json
from .compiler import compile_all, write_all
from .diagnostics import SpecError
from .samples import SAMPLES

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    started = time.perf_counter()
    try:
        compiled = compile_all([ROOT / "specs"])
    except SpecError as e:
        print(e.render(), file=sys.stderr)
        return 1
    write_all(compiled, ROOT / "generated")
    elapsed = time.perf_counter() - started
    print(f"protoc-x build specs/ → generated/: {len(compiled)} protocols in {elapsed:.2f} s")
    for c in compiled:
        print(
            f"  {c.source.relative_to(ROOT)} → generated/{c.name}.py ({len(c.code.splitlines())} lines)"
        )
    print()
    print("Decoding sample frames with the generated codecs:")
    for sample in SAMPLES:
        proto = importlib.import_module(f"generated.{sample.protocol}").PROTOCOL
        direction = Direction(sample.direction) if sample.direction else None
        frame = proto.decode(sample.data, 0, direction)
        view = frame_json(proto.name, frame)
        same = frame.encode() == sample.data
        what = [f"{view['stream_type']}", f"id={view['request_id']}"]
        for key in ("service", "method", "status", "timeout_ms"):
            if view[key] is not None:
                what.append(f"{key}={view[key]}")
        if view["heartbeat"]:
            what.append("heartbeat")
        if view["goaway"]:
            what.append("goaway")
        if view["headers"]:
            what.append(f"headers={len(view['headers'])}")
        what.append(f"body={view['body_length']}B")
        print(
            f"  {sample.protocol:9} {sample.name:44} {len(sample.data):4} B  {' '.join(what)}"
            f"  re-encode {'identical' if same else 'DIFFERS'}"
        )
        if not same:
            return 1
    print()
    print(
        "Next: `make test` runs the suite; `protoc-x decode bolt FILE --roundtrip` decodes yours."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
