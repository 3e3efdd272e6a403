"""`protoc-x fmt`: the shipped specs are in the canonical layout; formatting is idempotent, keeps
every token and comment on its line and never changes the generated module, on the shipped
specs, the test specs and every spec of the hostile, untrusted, bad-spec and language-reach
corpora that parses; a messy spec comes out as written below; --check, rewriting and refusing a
spec that does not parse, through the command line."""

from __future__ import annotations

import io
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protoc_x import cli
from protoc_x.compiler import compile_source
from protoc_x.diagnostics import SpecError
from protoc_x.fmt import format_source
from protoc_x.parser import decode_source, parse

from . import test_bad_specs as bad
from . import test_hostile_specs as hostile
from . import test_language_reach as reach
from . import test_untrusted_specs as untrusted

ROOT = Path(__file__).parents[2]
SHIPPED = sorted((ROOT / "specs").glob("*.xproto"))
TEST_SPECS = sorted((ROOT / "tests" / "codec").glob("*.xproto"))


def _text(text: str | bytes) -> str | None:
    if isinstance(text, str):
        return text
    try:
        return decode_source(text, "<bytes>")
    except SpecError:
        return None  # not UTF-8: nothing to format


def _corpus() -> dict[str, tuple[str, str | None]]:
    """Every spec of the corpora, once: id -> (text, stem the compiler checks it against)."""
    cases: dict[str, tuple[str, str | None]] = {}
    seen: set[str] = set()

    def add(cid: str, text: str | bytes | None, stem: str | None = "mini") -> None:
        text = _text(text) if text is not None else None
        if text is not None and text not in seen:
            seen.add(text)
            cases[cid] = (text, stem)

    for path in SHIPPED + TEST_SPECS:
        add(f"{path.parent.name}/{path.name}", path.read_text(), path.stem)
    for cid, name, text in hostile.CASES:
        add(f"hostile-{cid}", text, name.split(".")[0])
    for cid, text, stem, _ in bad.CASES:
        add(f"bad-{cid}", text, stem)
    for cid, text in bad.AT_THE_LIMITS.items():
        add(f"limits-{cid}", text)
    for cid, (text, _) in bad.SEVERAL.items():
        add(f"several-{cid}", text)
    for i, literal in enumerate(untrusted.SMUGGLING_STRINGS):
        add(f"untrusted-string-{i}", untrusted.smuggling_spec(literal))
    for name in untrusted.NAMES:
        add(f"untrusted-name-{name}", untrusted.named_spec(name))
    add("reach", reach.SPEC, "reach")
    add("widths", reach.WIDTHS, "widths")
    add("good", bad.GOOD)
    return cases


CORPUS = _corpus()


def _formatted(text: str) -> str | None:
    """fmt's text, or None where the spec does not parse, which the parser must agree with."""
    try:
        return format_source(text, "spec.xproto")
    except SpecError as e:
        assert "internal" not in e.message, e.render()
        with pytest.raises(SpecError) as refused:
            parse(text, "spec.xproto")
        assert refused.value.render() == e.render()
        return None


def _words(text: str) -> list[tuple[int, str]]:
    """Each token and comment (trailing space dropped) with its line, as the hostile-spec fuzz
    tokenizes specs: an oracle that shares no code with the formatter."""
    return [
        (text.count("\n", 0, m.start()) + 1, m.group().rstrip())
        for m in hostile.TOKEN.finditer(text)
    ]


def test_the_corpora_are_collected():
    assert len(CORPUS) > 250
    parsed = [cid for cid, (text, _) in CORPUS.items() if _formatted(text) is not None]
    assert len(parsed) > 200
    assert any(cid.startswith("untrusted-string") for cid in parsed)


@pytest.mark.parametrize("cid", CORPUS)
def test_formatting_is_idempotent_keeps_every_token_and_comment_and_the_module(cid):
    text, stem = CORPUS[cid]
    out = _formatted(text)
    if out is None:
        return
    assert format_source(out) == out
    assert _words(out) == _words(text)  # the same tokens and comments, each on its line
    assert out.endswith("\n") and not out.endswith("\n\n")
    assert all(line == line.rstrip() for line in out.split("\n"))
    try:
        before = compile_source(text, "spec.xproto", stem, fmt=False)
    except SpecError as e:  # refused the same, at the same line
        with pytest.raises(SpecError) as after:
            compile_source(out, "spec.xproto", stem, fmt=False)
        assert (after.value.pos.line, after.value.message) == (e.pos.line, e.message)
        return
    assert compile_source(out, "spec.xproto", stem, fmt=False) == before


def _flattened(text: str) -> str:
    """Every line's indentation gone, a tab and spaces after it: a spec laid out by nobody."""
    return "\n".join(line.lstrip() + " \t " for line in text.split("\n")) + "\n\n\n"


@pytest.mark.parametrize("spec", SHIPPED + TEST_SPECS, ids=lambda p: p.name)
def test_a_flattened_shipped_spec_formats_to_the_same_module(spec):
    """The generated module (black-formatted, as built) of a spec with its layout flattened,
    before and after formatting, is the shipped spec's."""
    text = spec.read_text()
    flat = _flattened(text)
    out = format_source(flat)
    assert out != flat and format_source(out) == out
    assert _words(out) == _words(text)
    code = compile_source(text, spec.name, spec.stem)
    assert compile_source(flat, spec.name, spec.stem) == code
    assert compile_source(out, spec.name, spec.stem) == code


def test_the_shipped_specs_are_formatted(capsys):
    assert cli.main(["fmt", "--check", str(ROOT / "specs")]) == 0
    assert capsys.readouterr() == ("", "")
    for spec in SHIPPED:
        assert format_source(spec.read_text()) == spec.read_text(), spec.name


# ---- one messy spec and its canonical layout ------------------------------------------------
MESSY = """\
# a spec written in a hurry   \n\
\n\
protocol mini{
  pool   multiplex     # many in flight
\tdetect u8==0x4d and u8 at 1 in(0,1)
    enum Dir:u8{request=0,response=1}
    enum Op : u8 {
      ping = 1,
         call=2,   # the usual
      quit =   0x10
    }
  \n\
\n\
    frame    {
  magic u8=0x4d
        dir Dir    # which way
   # the id, echoed back
      id       u32
      if dir==response{   code i16
      }else  {
                # nothing more
          op   Op
          bits u8 { hi:4 , lo : 4 }
      }
        size u16=len( data )
        data bytes[ size ]
        n u8 = len(extra)
          extra map( u8 )[count  n]
  # (more to come)
    }

    request_id=id
    timeout_ms = - 1
    body =data
    method = op==ping?"ping":name( op )
    header "k"=id+
  1
    let twice=id*2
    header   "twice" = twice    in (2, 4,
                                    6) ? "even" : null
    stream{
        dir==response=>response
        else=>request
    }
    heartbeat when op == ping {
        ping{dir=request,op=ping}
        reply { dir = response, code = 0, extra = {"a": "b"}, op = ping }
    }
    answer and
       close when op == quit {   # a client's goodbye
       dir = response,
       code = -1 }
    status_map {
        0 ok<-200->200
         1 fail <- 400,403, 404, 429, 500, 502, 503, 504 -> 500   # all of them

      -1 odd -> 500
        others->500
    }
    error_response { dir=response, data=$message }
    success_response{dir = response,data=request.data}
}   # end
  \n\
\n\
"""

CANONICAL = """\
# a spec written in a hurry

protocol mini {
    pool multiplex  # many in flight
    detect u8 == 0x4d and u8 at 1 in (0, 1)
    enum Dir : u8 { request = 0, response = 1 }
    enum Op : u8 {
        ping = 1,
        call = 2,  # the usual
        quit = 0x10
    }


    frame {
        magic   u8 = 0x4d
        dir     Dir  # which way
        # the id, echoed back
        id      u32
        if dir == response { code i16
        } else {
            # nothing more
            op  Op
            bits u8 { hi : 4, lo : 4 }
        }
        size    u16 = len(data)
        data    bytes[size]
        n       u8 = len(extra)
        extra   map(u8)[count n]
        # (more to come)
    }

    request_id = id
    timeout_ms = -1
    body       = data
    method     = op == ping ? "ping" : name(op)
    header "k" = id +
        1
    let twice = id * 2
    header "twice" = twice in (2, 4,
                               6) ? "even" : null
    stream {
        dir == response => response
        else            => request
    }
    heartbeat when op == ping {
        ping  { dir = request, op = ping }
        reply { dir = response, code = 0, extra = {"a": "b"}, op = ping }
    }
    answer and
        close when op == quit {  # a client's goodbye
        dir  = response,
        code = -1 }
    status_map {
        0 ok    <- 200                                     -> 200
        1 fail  <- 400, 403, 404, 429, 500, 502, 503, 504  -> 500  # all of them

        -1 odd  -> 500
        others  -> 500
    }
    error_response   { dir = response, data = $message }
    success_response { dir = response, data = request.data }
}  # end
"""


def test_a_messy_spec_comes_out_in_the_canonical_layout():
    assert format_source(MESSY) == CANONICAL
    assert format_source(CANONICAL) == CANONICAL
    comments = [w for _, w in _words(MESSY) if w.startswith("#")]
    assert len(comments) == 10
    assert [w for _, w in _words(CANONICAL) if w.startswith("#")] == comments
    # its module cites spec lines (an answer, computed headers): they did not move
    code = compile_source(MESSY, "mini.xproto", "mini")
    assert "# line 49" in code and "(spec line 36)" in code
    assert compile_source(CANONICAL, "mini.xproto", "mini") == code


def test_line_ends_and_a_byte_order_mark_come_out_as_plain_newlines(tmp_path, capsys):
    spec = tmp_path / "mini.xproto"
    spec.write_bytes(b"\xef\xbb\xbf" + CANONICAL.replace("\n", "\r\n").encode())
    assert cli.main(["fmt", "--check", str(spec)]) == 1
    assert cli.main(["fmt", str(spec)]) == 0
    assert spec.read_bytes() == CANONICAL.encode()
    assert capsys.readouterr().out == f"would reformat {spec}\nreformatted {spec}\n"


# ---- the command line -----------------------------------------------------------------------
def test_check_names_the_specs_that_would_change_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    messy, tidy = tmp_path / "sub" / "mini.xproto", tmp_path / "tidy.xproto"
    messy.write_text(MESSY)
    tidy.write_text(CANONICAL)
    tidy.chmod(0o640)
    assert cli.main(["fmt", "--check", str(tmp_path)]) == 1
    assert capsys.readouterr() == (f"would reformat {messy}\n", "")
    assert messy.read_text() == MESSY
    assert cli.main(["fmt", str(tmp_path)]) == 0
    assert capsys.readouterr() == (f"reformatted {messy}\n", "")
    assert messy.read_text() == CANONICAL and tidy.read_text() == CANONICAL
    assert tidy.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["mini.xproto", "sub", "tidy.xproto"]
    assert cli.main(["fmt", "--check", str(messy), str(tidy)]) == 0
    assert capsys.readouterr() == ("", "")


def test_rewriting_keeps_a_specs_mode_and_a_symbolic_link(tmp_path, capsys):
    spec = tmp_path / "mini.xproto"
    spec.write_text(MESSY)
    spec.chmod(0o600)
    link = tmp_path / "link.xproto"
    link.symlink_to(spec)
    assert cli.main(["fmt", str(link)]) == 0
    assert link.is_symlink() and spec.read_text() == CANONICAL
    assert spec.stat().st_mode & 0o777 == 0o600


def test_a_spec_that_does_not_parse_is_refused_and_left_as_it_is(tmp_path, capsys):
    broken = bad.variant("magic u8 = 0x4d", "magic u8 = }")
    spec, other = tmp_path / "mini.xproto", tmp_path / "other.xproto"
    spec.write_text(broken)
    other.write_text(MESSY.replace("protocol mini", "protocol other"))
    for check, done in ((["--check"], "would reformat"), ([], "reformatted")):
        assert cli.main(["fmt", *check, str(tmp_path)]) == 1
        out, err = capsys.readouterr()
        assert out == f"{done} {other}\n"
        head, line, caret = err.splitlines()
        assert head.startswith(f"{spec}:6:20: error: unexpected '}}'; expected ")
        assert (line, caret) == ("        magic u8 = }", " " * 19 + "^")
        assert spec.read_text() == broken
    assert other.read_text() == CANONICAL.replace("protocol mini", "protocol other")


def test_the_same_diagnostic_as_build(tmp_path, capsys):
    spec = tmp_path / "mini.xproto"
    spec.write_bytes(bad.GOOD.encode().replace(b"id u32", b"id\xc3 u32"))  # not UTF-8
    assert cli.main(["fmt", str(spec)]) == 1
    fmt_err = capsys.readouterr().err
    assert cli.main(["build", str(spec), "-o", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == fmt_err and ":8:11: error: invalid UTF-8" in fmt_err
    spec.write_text(bad.variant("id u32", "id u32 ;"))
    assert cli.main(["fmt", str(spec)]) == 1
    fmt_err = capsys.readouterr().err
    assert cli.main(["build", str(spec), "-o", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == fmt_err and ":8:16: error: unexpected character" in fmt_err


def test_paths_that_are_not_there(tmp_path, capsys):
    assert cli.main(["fmt", str(tmp_path / "nope.xproto")]) == 1
    assert (
        capsys.readouterr().err == f"error: {tmp_path / 'nope.xproto'}: no such file or directory\n"
    )


def test_stdin_to_stdout(monkeypatch, capsys):
    def stdin(text: str) -> None:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))

    stdin(MESSY)
    assert cli.main(["fmt", "-"]) == 0
    assert capsys.readouterr() == (CANONICAL, "")
    stdin(MESSY)
    assert cli.main(["fmt", "--check", "-"]) == 1
    assert capsys.readouterr() == ("would reformat <stdin>\n", "")
    stdin(CANONICAL)
    assert cli.main(["fmt", "--check", "-"]) == 0
    assert capsys.readouterr() == ("", "")
    stdin("protocol {")
    assert cli.main(["fmt", "-"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("<stdin>:1:10: error: unexpected '{'")
    assert cli.main(["fmt", "-", "specs"]) == 1
    assert "alone" in capsys.readouterr().err


# ---- whitespace shaken up formats back ------------------------------------------------------
def _depth_indented(text: str) -> list[bool]:
    """For each line of a formatted spec: may its spacing change without changing its format?
    So it may if it is indented by its brace depth alone (4 spaces a level, a line opening with
    '}' one level less), as the next line with code is: a line continuing a statement is not,
    and the line before one may hold the token the continuation is aligned under."""
    depth, plain, code_lines = 0, [], []
    for n, line in enumerate(text.split("\n")):
        code = re.sub(r'"(?:[^"\\\n]|\\.)*"|#.*', "", line).strip()
        plain.append(True)
        if code:
            code_lines.append(n)
            plain[n] = line.startswith(" " * 4 * (depth - code.startswith("}")) + code[0])
            depth += code.count("{") - code.count("}")
    following = {a: b for a, b in zip(code_lines, code_lines[1:])}
    return [ok and plain[following.get(n, n)] for n, ok in enumerate(plain)]


def _shaken(text: str, rng: random.Random) -> str:
    """``text`` with its whitespace changed but for line breaks: the spaces between the tokens
    and before the comments of lines that :func:`_depth_indented` finds safe, their
    indentation, and trailing space on every line; blank lines at the end."""
    safe = _depth_indented(text)
    out = []
    for line, ok in zip(text.split("\n"), safe):
        if ok and line.strip():
            pieces = [m.group() for m in hostile.TOKEN.finditer(line)]
            gaps = [rng.choice([" ", "  ", "\t", "   "]) for _ in pieces]
            line = rng.choice(["", " ", "\t", "  " * rng.randrange(8)]) + "".join(
                p + g for p, g in zip(pieces, gaps)
            )
        out.append(line + rng.choice(["", " ", "\t "]))
    return "\n".join(out) + rng.choice(["", "\n", "\n \n"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SHIPPED + TEST_SPECS), st.randoms(use_true_random=False))
def test_a_spec_with_its_whitespace_shaken_formats_back(spec, rng):
    tidy = format_source(spec.read_text())
    shaken = _shaken(tidy, rng)
    assert format_source(shaken) == tidy


def test_mutants_of_the_shipped_specs_format_idempotently():
    """Mutants of the hostile-spec fuzz: each that parses formats to a fixed point with its
    tokens and comments on their lines; none is an internal error."""
    rng = random.Random(20261215)
    texts = [p.read_text() for p in hostile.SPECS]
    parsed = 0
    for _ in range(300):
        text = hostile.mutate(rng.choice(texts), rng)
        out = _formatted(text)
        if out is not None:
            parsed += 1
            assert format_source(out) == out and _words(out) == _words(text)
    assert parsed > 50
