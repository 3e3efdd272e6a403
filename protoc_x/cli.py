"""The ``protoc-x`` command line: build, check (specs and proxy configs), fmt, doc, decode, run,
serve."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

from protoc_x.runtime.admin import LEVELS
from protoc_x.runtime.api import DecodeError, Direction, PluginError, XFrame, XRecord

from . import __version__
from .compiler import TYPED_INIT, compile_all, find_specs, read_spec, write_all
from .diagnostics import SpecError
from .parser import decode_source


def _json_value(value: Any, enum: dict | None = None) -> Any:
    if enum is not None and isinstance(value, int):
        return enum.get(value, value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {_json_key(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, XRecord):  # a record's value: its fields, enums by name
        return {
            k: _json_value(v, value.FIELD_ENUMS.get(k)) for k, v in value.field_values().items()
        }
    raw = getattr(value, "data", None)  # field-type wrappers of raw encodings
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw).hex()
    return str(value)


def _json_key(key: Any) -> str:
    """A map key as a JSON object key: strings as they are, other values as JSON text (a
    hessian2 map may have int, null or binary keys)."""
    if isinstance(key, str):
        return key
    value = _json_value(key)
    return value if isinstance(value, str) else json.dumps(value)


def frame_json(name: str, frame: XFrame) -> dict[str, Any]:
    """The contract's JSON view of one decoded frame."""
    fields = {
        key: _json_value(value, frame.FIELD_ENUMS.get(key))
        for key, value in frame.field_values().items()
    }
    return {
        "protocol": name,
        "length": frame.length,
        "stream_type": frame.get_stream_type().value,
        "request_id": frame.get_request_id(),
        "heartbeat": bool(frame.is_heartbeat()),
        "goaway": bool(frame.is_goaway()),
        "status": frame.get_status(),
        "timeout_ms": frame.get_timeout(),
        "service": frame.get_service(),
        "method": frame.get_method(),
        "headers": {_json_key(k): _json_value(v) for k, v in frame.get_headers().items()},
        "body_length": len(frame.get_body() or b""),
        "fields": fields,
    }


#: doc and dissector also take an installed protocol's name (its spec ships with it)
INSTALLED_HELP = (
    "spec files or directories, or an installed protocol's name (bolt, a plug-in's)"
    " for the spec it ships (default: specs/)"
)


def _cmd_check(args: argparse.Namespace) -> int:
    """Proxy configs (``.yaml``/``.yml``): exit 2 on any error; specs: as ``build`` without
    writing. The worst exit code wins."""
    from .start import CONFIG_SUFFIXES, check

    configs = [p for p in args.paths if Path(p).suffix.lower() in CONFIG_SUFFIXES]
    specs = [p for p in args.paths if p not in configs]
    codes = [check(path) for path in configs]
    if specs or not configs:
        args.paths = specs
        codes.append(_cmd_build(args, write=False))
    return max(codes)


def _cmd_build(args: argparse.Namespace, write: bool, backend: str = "python") -> int:
    paths = args.paths or ["specs"]
    if backend in ("doc", "dissector"):
        paths = [_spec_or_installed(p) for p in paths]
    typed_dir = getattr(args, "typed", None) if backend == "python" else None
    try:
        compiled = compile_all(paths, backend)
        typed = compile_all(paths, "typed") if typed_dir else []
    except SpecError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except OSError as e:
        missing = isinstance(e, FileNotFoundError) and not args.paths
        hint = " (with no PATH, the specs/ directory here is used)" if missing else ""
        print(f"error: {e}{hint}", file=sys.stderr)
        return 1
    if write:
        try:
            out = write_all(compiled, Path(args.output), package=backend == "python")
        except OSError as e:
            print(f"error: cannot write {args.output}: {e} (nothing written)", file=sys.stderr)
            return 1
        try:
            out += write_all(typed, Path(typed_dir), init=TYPED_INIT) if typed else []
        except OSError as e:
            print(f"error: cannot write {typed_dir}: {e} (no typed scan written)", file=sys.stderr)
            return 1
        for path in out:
            print(path)
    else:
        for c in compiled:
            print(f"{c.source}: ok")
    return 0


def _spec_or_installed(path: str) -> str | Path:
    """``path``, or if nothing is there, the spec of the installed protocol so named (a
    built-in's, or a plug-in's that ships NAME.xproto beside its codec)."""
    from .loader import installed_spec

    if Path(path).exists() or Path(path).is_symlink():
        return path
    return installed_spec(path) or path


def _cmd_fmt(args: argparse.Namespace) -> int:
    """Rewrite each spec that is not in the canonical layout; ``--check``: name them, write
    nothing, exit 1 if there are any. A spec that does not parse is reported (exit 1) and left
    as it is; the others are still done. ``-``: stdin to stdout."""
    from .fmt import format_source, rewrite

    if "-" in args.paths:
        if len(args.paths) > 1:
            print("error: - (stdin) is formatted alone, not with other paths", file=sys.stderr)
            return 1
        return _fmt_stdin(args.check)
    try:
        paths = find_specs(args.paths)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    status = 0
    for path in paths:
        try:
            text = format_source(read_spec(path), str(path))
            if text.encode("utf-8") == path.read_bytes():
                continue
            if args.check:
                print(f"would reformat {path}")
                status = 1
            else:
                rewrite(path, text)
                print(f"reformatted {path}")
        except SpecError as e:
            print(e.render(), file=sys.stderr)
            status = 1
        except OSError as e:
            print(f"error: {path}: {e} (left as it was)", file=sys.stderr)
            status = 1
    return status


def _fmt_stdin(check: bool) -> int:
    from .fmt import format_source

    data = sys.stdin.buffer.read()
    try:
        text = format_source(decode_source(data, "<stdin>"), "<stdin>")
    except SpecError as e:
        print(e.render(), file=sys.stderr)
        return 1
    if check:
        if text.encode("utf-8") != data:
            print("would reformat <stdin>")
            return 1
        return 0
    sys.stdout.write(text)
    return 0


def _read_input(args: argparse.Namespace) -> bytes:
    if args.file in (None, "-"):
        data = sys.stdin.buffer.read()
    else:
        data = Path(args.file).read_bytes()
    if args.hex:
        text = "".join(data.decode("ascii", "replace").split())
        try:
            return bytes.fromhex(text)
        except ValueError as e:
            raise DecodeError(0, f"input is not hex: {e}") from None
    return data


def _protocol(args: argparse.Namespace):
    """The protocol named on the command line (built in or from --protocols), or None after
    saying why on stderr."""
    from .loader import protocols

    try:
        protos = protocols(args.protocols or [])
    except (SpecError, ValueError, OSError, ImportError, PluginError) as e:
        print(e.render() if isinstance(e, SpecError) else f"error: {e}", file=sys.stderr)
        return None
    proto = protos.get(args.protocol)
    if proto is None:
        print(
            f"error: unknown protocol {args.protocol!r} (have: {', '.join(sorted(protos))})",
            file=sys.stderr,
        )
    return proto


def _frame_at(proto, data, pos: int, direction, first: bool):
    """The frame at ``pos`` of a direction's bytes and its JSON view, or None if it is not all
    there. A DecodeError (from the frame, or from a field read only for the view) carries
    its offset in ``data``."""
    try:
        if first:  # (a connection's first frame that way: it may be a handshake)
            frame = proto.decode(data, pos, direction, first=True)
        else:
            frame = proto.decode(data, pos, direction)
        return None if frame is None else (frame, frame_json(proto.name, frame))
    except DecodeError as e:
        if e.offset >= pos:
            raise
        raise DecodeError(pos + e.offset, e.reason) from None  # (counted from the frame)


def _cmd_decode(args: argparse.Namespace) -> int:
    proto = _protocol(args)
    if proto is None:
        return 1
    if args.pcap is not None:
        if args.pcap and args.file is not None:
            print("error: --pcap CAPTURE and FILE: name the capture once", file=sys.stderr)
            return 1
        if args.hex or args.roundtrip or args.direction:
            print(
                "error: --pcap reads a capture: no --hex, --roundtrip or --direction (each "
                "connection's client sends requests)",
                file=sys.stderr,
            )
            return 1
        return _decode_pcap(proto, args.pcap or args.file or "-", args)
    direction = Direction(args.direction) if args.direction else None
    if proto.needs_direction and direction is None:
        print(
            f"error: {proto.name} frames do not say their direction: pass --direction",
            file=sys.stderr,
        )
        return 1
    try:
        data = _read_input(args)
    except DecodeError as e:
        print(f"error: offset {e.offset}: {e.reason}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not data:
        print("error: offset 0: no input", file=sys.stderr)
        return 1
    pos = 0
    # the input is a connection's bytes one way: its first frame may be a handshake
    first = proto.first_frames and not args.mid_stream
    while pos < len(data):
        try:
            found = _frame_at(proto, data, pos, direction, first)
        except DecodeError as e:
            print(f"error: offset {e.offset}: {e.reason}", file=sys.stderr)
            return 1
        if found is None:
            print(
                f"error: offset {len(data)}: incomplete frame starting at offset {pos} (need more bytes)",
                file=sys.stderr,
            )
            return 1
        frame, obj = found
        first = False
        print(json.dumps(obj, separators=(",", ":"), ensure_ascii=False), flush=True)
        if args.roundtrip:
            original = data[pos : pos + frame.length]
            again = frame.encode()
            if again != original:
                diff = next(
                    (i for i, (a, b) in enumerate(zip(original, again)) if a != b),
                    min(len(original), len(again)),
                )
                print(
                    f"error: offset {pos + diff}: roundtrip differs (frame at offset {pos}, {len(original)} bytes in, {len(again)} out)",
                    file=sys.stderr,
                )
                return 1
        pos += frame.length
    return 0


def _decode_pcap(proto, capture: str, args: argparse.Namespace) -> int:
    """Every frame of every TCP connection of a capture, in the order the packets completing
    them came, each with its connection and direction. A direction that cannot be read on
    (bytes that are no frame) is reported and left; the others go on."""
    from .pcap import CaptureError, Reassembler, packets

    streams = Reassembler(args.port)
    pending: dict[tuple[int, str], bytearray] = {}  # undecoded bytes of each direction
    start: dict[tuple[int, str], int] = {}  # their offset in it
    first: dict[tuple[int, str], bool] = {}
    broken: set[tuple[int, str]] = set()
    failed = False

    def where(conn, direction) -> str:
        return f"connection {conn.index} ({conn.client} -> {conn.server}) {direction}"

    try:
        f = io.BytesIO(sys.stdin.buffer.read()) if capture == "-" else open(capture, "rb")
        with f:
            for number, _ts, linktype, buf in packets(f):
                for d in streams.feed(number, linktype, buf):
                    key = (d.connection.index, d.direction)
                    if key in broken:
                        continue
                    if key not in pending:
                        pending[key], start[key] = bytearray(), d.offset
                        flow = d.connection.flows[d.direction]
                        first[key] = proto.first_frames and flow.from_start and not args.mid_stream
                    buf_ = pending[key]
                    buf_ += d.data
                    direction = (
                        Direction.REQUEST if d.direction == "to_server" else Direction.RESPONSE
                    )
                    pos = 0
                    while pos < len(buf_):
                        try:
                            found = _frame_at(proto, buf_, pos, direction, first[key])
                        except DecodeError as e:
                            offset = start[key] + e.offset
                            print(
                                f"error: {where(d.connection, d.direction)}: offset {offset}: "
                                f"{e.reason} (the rest of this direction is not decoded)",
                                file=sys.stderr,
                            )
                            broken.add(key)
                            failed = True
                            break
                        if found is None:
                            break
                        frame, view = found
                        first[key] = False
                        obj = {
                            "connection": d.connection.index,
                            "client": str(d.connection.client),
                            "server": str(d.connection.server),
                            "direction": d.direction,
                            "packet": d.packet,
                            "offset": start[key] + pos,
                            **view,
                        }
                        print(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))
                        pos += frame.length
                    del buf_[:pos]
                    start[key] += pos
    except (CaptureError, OSError) as e:
        print(f"error: {capture}: {e}", file=sys.stderr)
        return 1
    for gap in streams.gaps():
        print(
            f"warning: {where(gap.connection, gap.direction)}: bytes missing after offset "
            f"{gap.offset} (a segment the capture lost): the rest is not decoded",
            file=sys.stderr,
        )
    for (index, direction), rest in pending.items():
        if rest and (index, direction) not in broken:
            conn = next(c for c in streams.connections.values() if c.index == index)
            print(
                f"warning: {where(conn, direction)}: {len(rest)} bytes at offset "
                f"{start[(index, direction)]} end the capture without ending a frame",
                file=sys.stderr,
            )
    return 1 if failed else 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from protoc_x.runtime.network import parse_address
    from protoc_x.runtime.serve import main as serve_main

    proto = _protocol(args)
    if proto is None:
        return 1
    try:
        host, port = parse_address(args.listen)
    except ValueError as e:
        print(f"error: --listen: {e}", file=sys.stderr)
        return 2
    try:
        return serve_main(proto, host, port, args.name, args.verbose)
    except OSError as e:
        print(f"error: cannot listen on {args.listen}: {e}", file=sys.stderr)
        return 1


def _cmd_new(args: argparse.Namespace) -> int:
    from .scaffold import ScaffoldError, new

    try:
        out = new(args.name, Path(args.output) if args.output else None)
    except ScaffoldError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="protoc-x", description="Compile .xproto protocol specs into proxy codecs."
    )
    parser.add_argument("--version", action="version", version=f"protoc-x {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="compile specs into generated modules")
    p.add_argument(
        "paths", nargs="*", metavar="PATH", help="spec files or directories (default: specs/)"
    )
    p.add_argument(
        "-o",
        "--output",
        default="generated",
        metavar="DIR",
        help="output directory (default: generated/)",
    )
    p.add_argument(
        "--typed",
        metavar="DIR",
        help="also write each protocol's typed scan, DIR/NAME.pyx, which a package build "
        "compiles with Cython (docs/performance.md)",
    )

    p = sub.add_parser(
        "doc", help="write each spec's reference page (NAME.md) and frame diagram (NAME.svg)"
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help=INSTALLED_HELP)
    p.add_argument(
        "-o", "--output", default="docs/protocols", metavar="DIR",
        help="output directory (default: docs/protocols/)",
    )  # fmt: skip

    p = sub.add_parser("dissector", help="write each spec's Wireshark Lua dissector (NAME.lua)")
    p.add_argument("paths", nargs="*", metavar="PATH", help=INSTALLED_HELP)
    p.add_argument(
        "-o", "--output", default=".", metavar="DIR",
        help="output directory (default: the current directory)",
    )  # fmt: skip

    p = sub.add_parser(
        "fmt",
        help="rewrite specs in the canonical layout (docs/language.md, Formatting), comments kept",
    )
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="spec files or directories; - reads stdin"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing: name each spec that would change, and exit 1 if any would",
    )

    p = sub.add_parser(
        "check", help="check specs or proxy configs (.yaml/.yml) as run would, write nothing"
    )
    p.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="spec files or directories (default: specs/), or proxy configs (.yaml, .yml)",
    )

    p = sub.add_parser("decode", help="decode raw frames to JSON Lines")
    p.add_argument("protocol")
    p.add_argument("file", nargs="?", metavar="FILE|-", help="input file (default: stdin)")
    p.add_argument("--hex", action="store_true", help="input is hex text (whitespace ignored)")
    p.add_argument(
        "--direction",
        choices=("request", "response"),
        help="for protocols whose frames do not say it",
    )
    p.add_argument(
        "--mid-stream",
        action="store_true",
        help="the input starts after its connection's first frame (for protocols whose "
        "handshake has a layout of its own: otherwise its first frame is read as one)",
    )
    p.add_argument("--roundtrip", action="store_true", help="re-encode each frame and compare")
    p.add_argument(
        "--pcap",
        nargs="?",
        const="",
        metavar="CAPTURE",
        help="the input (CAPTURE, or FILE) is a pcap or pcapng capture: each TCP connection "
        "reassembled per direction (client to server: requests), frames as JSON Lines with "
        "their connection, direction, packet and offset",
    )
    p.add_argument(
        "--port",
        type=int,
        metavar="PORT",
        help="with --pcap: only connections to this server port (it also tells client from "
        "server when the capture missed the handshake)",
    )
    p.add_argument(
        "--protocols", action="append", metavar="PATH", help="extra specs or generated modules"
    )

    p = sub.add_parser(
        "new", help="scaffold a plug-in package for a protocol (spec, codec, samples, tests)"
    )
    p.add_argument("name", metavar="NAME", help="the protocol's name (lowercase, as in specs)")
    p.add_argument(
        "-o", "--output", metavar="DIR", help="the package's directory (default: protoc-x-NAME)"
    )

    p = sub.add_parser("run", help="run the proxy")
    p.add_argument("config", metavar="CONFIG", help="YAML config")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes")
    p.add_argument(
        "--log-level",
        choices=LEVELS,
        default="info",
        help="the proxy's own log, on stderr (default: info; the admin's /logging changes it)",
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="reload when the config, or a spec it names, changes (as on SIGHUP)",
    )

    p = sub.add_parser("serve", help="a test upstream answering every request with success")
    p.add_argument("protocol")
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--protocols", action="append", metavar="PATH", help="extra specs or modules")
    p.add_argument("--name", default="serve", help="name in log lines")
    p.add_argument("--verbose", action="store_true", help="log every request")

    args = parser.parse_args(argv)
    if args.command == "run":
        from .start import main as run_main

        return run_main(args.config, args.workers, args.watch, args.log_level)
    if args.command == "serve":
        return _cmd_serve(args)
    if args.command == "build":
        return _cmd_build(args, write=True)
    if args.command == "doc":
        return _cmd_build(args, write=True, backend="doc")
    if args.command == "dissector":
        return _cmd_build(args, write=True, backend="dissector")
    if args.command == "check":
        return _cmd_check(args)
    if args.command == "new":
        return _cmd_new(args)
    if args.command == "fmt":
        return _cmd_fmt(args)
    return _cmd_decode(args)


if __name__ == "__main__":
    sys.exit(main())
