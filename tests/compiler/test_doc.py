"""`protoc-x doc`: a reference page and a frame diagram per spec. The shipped specs' pages are
committed under docs/protocols/ and kept current here (as generated/ is); every diagram is well
formed XML and renders to a PNG of its own size with a real renderer (Debian's rsvg-convert);
the page says what the spec says; a bad spec is file:line:col with nothing written; what a spec
writes reaches the page escaped."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from protoc_x.compiler import render_source

from .test_bad_specs import variant

ROOT = Path(__file__).parents[2]
SPECS = sorted((ROOT / "specs").glob("*.xproto"))
SVG = "{http://www.w3.org/2000/svg}"


def doc(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "protoc_x.cli", "doc", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def test_committed_pages_are_current(tmp_path):
    result = doc("specs", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    fresh = sorted(p.name for p in tmp_path.iterdir())
    assert fresh == sorted(f"{s.stem}{ext}" for s in SPECS for ext in (".md", ".svg"))
    for name in fresh:
        committed = ROOT / "docs" / "protocols" / name
        assert committed.is_file(), f"docs/protocols/{name} is missing: run protoc-x doc specs"
        assert (
            committed.read_bytes() == (tmp_path / name).read_bytes()
        ), f"docs/protocols/{name} is stale against specs/: run protoc-x doc specs"
    again = tmp_path / "again"
    assert doc("specs", "-o", str(again)).returncode == 0
    assert all((again / name).read_bytes() == (tmp_path / name).read_bytes() for name in fresh)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_the_diagram_renders(tmp_path, spec):
    svg = ROOT / "docs" / "protocols" / f"{spec.stem}.svg"
    root = ET.parse(svg).getroot()
    assert root.tag == f"{SVG}svg"
    width, height = int(root.get("width")), int(root.get("height"))
    assert rsvg(), "rsvg-convert is installed by make system-deps"
    png = tmp_path / f"{spec.stem}.png"
    subprocess.run([rsvg(), str(svg), "-o", str(png)], check=True, capture_output=True)
    assert _png_size(png) == (width, height)
    # every frame field of every layout is a box with its name in the diagram's tooltips
    titles = [t.text or "" for t in root.iter(f"{SVG}title")]
    text = (ROOT / "specs" / spec.name).read_text()
    planned = render_source(text, str(spec), spec.stem, "doc")
    page = planned[f"{spec.stem}.md"]
    assert f"![{spec.stem} frame layouts]({spec.stem}.svg)" in page
    from protoc_x.compiler import plan_source
    from protoc_x.plan import Run, leaves

    plan = plan_source(text, str(spec), spec.stem)
    for leaf in leaves(plan.tree):
        for step in leaf.steps:
            for item in step.items if isinstance(step, Run) else [step.field]:
                for name in [f.name for f in getattr(item, "fields", [item])]:
                    assert any(t.startswith((f"{name}:", f"{name} ")) for t in titles), (
                        spec.stem,
                        name,
                    )
                    assert f"| `{name}` |" in page, (spec.stem, name)


def rsvg() -> str | None:
    return shutil.which("rsvg-convert")


def test_the_page_says_what_the_spec_says():
    page = (ROOT / "docs" / "protocols" / "bolt.md").read_text()
    # the layouts, with the offsets the protocol's documentation gives (protocols.md)
    assert "### Layout 1: kind == response" in page
    assert "| 10 | 2 | `status` | `u16` |  |" in page
    assert "| 10 | 4 | `timeout` | `i32` |  |" in page
    assert "| 22 | variable | `class_name` | `string[class_len]` |  |" in page
    assert "| after class_name | variable | `headers` | `map(i32)[header_len]` |  |" in page
    assert "| 0 | 1 | `proto` | `u8` | `= 0x01` |" in page
    assert "| 12 | 2 | `class_len` | `u16` | `= len(class_name)` |" in page
    # the status map both ways, the stream rules, the routing view
    assert "| 4 (0x4) | `threadpool_busy` | 429, 503 | 503 |" in page
    assert "| others |  |  | 500 |" in page
    assert "| `kind == oneway` | oneway |" in page and "| else | request |" in page
    assert '| `service` | `headers["service"] ?? headers["sofa_head_target_service"]` |' in page
    assert "A frame is a heartbeat when `cmd == heartbeat`." in page
    dubbo = (ROOT / "docs" / "protocols" / "dubbo.md").read_text()
    assert "| 2 bit 0 | 1 bits | `is_request` | bits |  |" in dubbo
    kafka = (ROOT / "docs" / "protocols" / "kafka.md").read_text()
    assert "The frame's size is `size + 4` bytes, read at offset 0." in kafka


def test_a_bad_spec_writes_no_page(tmp_path):
    (tmp_path / "mini.xproto").write_text(variant("id u32", "id u99"))
    out = tmp_path / "out"
    result = doc(str(tmp_path / "mini.xproto"), "-o", str(out))
    assert result.returncode == 1 and not out.exists()
    assert result.stderr.startswith(f"{tmp_path / 'mini.xproto'}:8:12: error: ")


def test_what_a_spec_writes_reaches_the_page_escaped(tmp_path):
    text = variant(
        "error_response { dir = response, data = $message }",
        'error_response { dir = response, data = "</text><script>|`x`&" }',
        "size u16 = len(data)",
        'size u16 = len(data)\n        tag string[until "<&>"]',
    )
    files = render_source(text, "mini.xproto", "mini", "doc")
    root = ET.fromstring(files["mini.svg"])  # well formed: every spec string escaped
    assert not [e for e in root.iter() if e.tag.endswith("script")]
    assert any("<&>" in (t.text or "") for t in root.iter(f"{SVG}title"))
    page = files["mini.md"]
    assert '- ``data = "</text><script>|`x`&"``' in page  # code kept whole
