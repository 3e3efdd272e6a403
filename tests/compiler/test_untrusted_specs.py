"""Specs are untrusted: nothing in one can put code into a generated module."""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

import pytest

from protoc_x.compiler import compile_source
from protoc_x.diagnostics import SpecError
from protoc_x.loader import load_module_source

from .test_bad_specs import GOOD

PAYLOAD = "__import__('os').system('touch /tmp/protocx-pwned')"

SMUGGLING_STRINGS = [
    '"\\"; ' + PAYLOAD.replace('"', "") + '; \\""',
    '"\\"\\"\\" + ' + PAYLOAD.replace('"', "") + ' + \\"\\"\\""',
    '"\\n' + PAYLOAD.replace('"', "") + '\\n"',
    '"\\\\\\n' + PAYLOAD.replace('"', "") + '"',
    '"\\x22)\\x0a' + PAYLOAD.replace('"', "") + '#"',
]


def _outside_strings(code: str) -> str:
    """The module text with every string literal removed (comments stay)."""
    kept = []
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type not in (tokenize.STRING,):
            kept.append(tok.string)
    return " ".join(kept)


def smuggling_spec(literal: str) -> str:
    """GOOD with ``literal`` as a string in a template and as a header's key, and a comment
    carrying the payload."""
    return GOOD.replace(
        "error_response { dir = response, data = $message }",
        f"error_response {{ dir = response, data = {literal} }}\n"
        f"    header {literal} = id\n"
        f'    # a comment """ \' {PAYLOAD}\n',
    )


def named_spec(name: str) -> str:
    """GOOD with its field ``id`` named ``name``."""
    return GOOD.replace("id u32", f"{name} u32")


NAMES = ["os.system", "x'y", 'x"y', "x\\y", "import", "__class__", "_hidden", "a-b", "1abc"]


@pytest.mark.parametrize("literal", SMUGGLING_STRINGS)
def test_strings_stay_string_literals(literal, tmp_path):
    spec = smuggling_spec(literal)
    marker = Path("/tmp/protocx-pwned")
    marker.unlink(missing_ok=True)
    code = compile_source(spec, "mini.xproto", "mini")
    outside = _outside_strings(code)
    assert "system" not in outside and "pwned" not in outside and "__import__" not in outside
    module = load_module_source("mini", code, "mini.xproto")
    assert not marker.exists(), "spec text ran as code"
    frame = module.PROTOCOL.decode(bytes([0x4D, 0, 0, 0, 0, 1, 0, 0]))
    reply = module.PROTOCOL.hijack(frame, 500)
    assert b"system" in reply.encode()  # the string arrives as data, intact


@pytest.mark.parametrize("name", NAMES)
def test_names_that_could_carry_code_are_rejected(name):
    spec = named_spec(name)
    with pytest.raises(SpecError) as info:
        compile_source(spec, "mini.xproto", "mini")
    assert info.value.pos.line == 8
