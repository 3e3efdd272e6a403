"""Lua 5.2 for tests, as the dissector's target runs it: Wireshark's own Lua, in tshark.

There is no standalone Lua here: a script given to ``tshark -X lua_script:SCRIPT`` runs when
tshark starts, and what it prints reaches tshark's stdout. :func:`run_lua` runs one script so
(reading an empty capture, with a configuration directory of its own, so that no personal
plugin loads), gives it the files it needs in a directory of their own, and returns what it
printed, or raises :class:`LuaError` with Lua's traceback. tshark takes about half a second to
start: batch many cases into one script.

:func:`read_cases` runs field-type readers (``runtime/fieldtypes/NAME.lua``) over byte cases in
one tshark run, as the dissector calls them.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from protoc_x.backends.lua import lua_string

ROOT = Path(__file__).resolve().parents[2]
#: the value model every field-type reader is given (its ``...``)
VALUES_LUA = ROOT / "protoc_x" / "backends" / "lua" / "values.lua"
#: where the field-type readers live: NAME.lua beside NAME.py
FIELDTYPES_DIR = ROOT / "runtime" / "fieldtypes"

_DONE = "\n<<lua-host: done>>\n"
_FAILED = "\n<<lua-host: error>>\n"

#: an empty pcap (Ethernet): tshark has a capture to read and nothing to dissect
_EMPTY_PCAP = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


class LuaError(Exception):
    """The script raised an error (the message holds Lua's traceback), or tshark failed."""


def tshark() -> str | None:
    """The tshark binary, or None when it is not installed."""
    return shutil.which("tshark")


def lua_literal(value) -> str:
    """A Lua literal of ``value``: None, bool, int, float, str, bytes, list or tuple of them."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) >= 1 << 53:
            raise ValueError(f"{value} is not exact as a Lua 5.2 number")
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else f"({value!r})"
    if isinstance(value, (str, bytes, bytearray)):
        return lua_string(value)
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def _driver(directory: str) -> str:
    d = lua_string(directory)
    return f"""-- lua_host: runs script.lua with its directory as its argument; marks how it ended
local chunk, err = loadfile({d} .. "script.lua")
local ok, e
if chunk == nil then
    ok, e = false, err
else
    ok, e = xpcall(chunk, function(m) return debug.traceback(tostring(m), 2) end, {d})
end
io.stdout:write(ok and {lua_string(_DONE)} or ({lua_string(_FAILED)} .. tostring(e)))
io.stdout:flush()
"""


def run_lua_bytes(
    script: str, *, files: dict[str, str | bytes] | None = None, timeout: float = 300
) -> bytes:
    """Run ``script`` (Lua 5.2 source) in tshark's Lua: what it printed, as bytes.

    ``files`` (name → content) are written to one directory, which the script gets as its
    ``...`` (a path ending in "/"): ``local dir = ...; io.open(dir .. "cases.txt")``."""
    binary = tshark()
    if binary is None:
        raise LuaError("tshark is not installed (the Lua host is Wireshark's Lua)")
    with tempfile.TemporaryDirectory(prefix="lua-host-") as tmp:
        directory = tmp + "/"
        for name, content in (files or {}).items():
            if "/" in name or name in ("script.lua", "host.lua", "empty.pcap"):
                raise ValueError(f"not a file name for the script's directory: {name!r}")
            data = content.encode("utf-8") if isinstance(content, str) else content
            Path(directory, name).write_bytes(data)
        Path(directory, "script.lua").write_text(script, "utf-8")
        Path(directory, "host.lua").write_text(_driver(directory), "utf-8")
        Path(directory, "empty.pcap").write_bytes(_EMPTY_PCAP)
        config = Path(directory, "config")
        config.mkdir()
        env = dict(os.environ, WIRESHARK_CONFIG_DIR=str(config))
        command = [binary, "-X", f"lua_script:{directory}host.lua", "-r"]
        command += [f"{directory}empty.pcap", "-q"]
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as e:
            raise LuaError(f"tshark ran longer than {timeout} s") from e
    out = done.stdout
    stderr = done.stderr.decode("utf-8", "replace")
    stderr = "\n".join(line for line in stderr.splitlines() if "Running as user" not in line)
    if out.endswith(_DONE.encode()):
        return out[: -len(_DONE)]
    at = out.rfind(_FAILED.encode())
    if at >= 0:
        raise LuaError(out[at + len(_FAILED) :].decode("utf-8", "replace"))
    raise LuaError(f"tshark exited {done.returncode} before the script ended:\n{stderr}")


def run_lua(
    script: str, *, files: dict[str, str | bytes] | None = None, timeout: float = 300
) -> str:
    """:func:`run_lua_bytes`, decoded as UTF-8 (a surrogate's 3 bytes, as a lone surrogate in
    Python's strings is written, decode to that surrogate)."""
    return run_lua_bytes(script, files=files, timeout=timeout).decode("utf-8", "surrogatepass")


# ---- field-type readers ---------------------------------------------------------------------

#: Lua that loads the value model as ``V`` and each field-type library on first use as
#: ``FIELDTYPES[name]`` (from FIELDTYPES_DIR), as the dissector pastes them in
FIELDTYPES_PRELUDE = f"""
local V = dofile({lua_string(str(VALUES_LUA))})
local FIELDTYPES = setmetatable({{}}, {{ __index = function(t, name)
    local chunk = assert(loadfile({lua_string(str(FIELDTYPES_DIR) + "/")} .. name .. ".lua"))
    local mod = chunk(V)
    t[name] = mod
    return mod
end }})
"""

# Each line of cases.txt is a Lua table: {hex = hex(buf), pos = ..., stop = ..., steps =
# {{module, type, {args}}, ...}}. The steps read one after another from pos, each module's
# context made once and shared by its steps. Output lines, tab-separated, hex where bytes:
#   V case step pos open hex(V.json(value))      a step's value
#   E case step kind offset hex(reason)           the error that ended the case (short/fail)
#   X case hex(message)                           anything else raised: a bug
_READ_CASES = FIELDTYPES_PRELUDE + r"""
local dir = ...
local out = {}
local n = 0
local function bug(e)
    if type(e) == "table" then return e end
    return debug.traceback(tostring(e), 2)
end
for line in io.lines(dir .. "cases.txt") do
    n = n + 1
    local case = assert(load("return " .. line))()
    case.buf = string.gsub(case.hex, "..", function(h) return string.char(tonumber(h, 16)) end)
    local ok, e = xpcall(function()
        local contexts, pos = {}, case.pos
        for i, step in ipairs(case.steps) do
            local mod = FIELDTYPES[step[1]]
            if contexts[step[1]] == nil then contexts[step[1]] = mod.new_context() or false end
            local reader = mod.TYPES[step[2]](table.unpack(step[3]))
            local okay, value, after, open = xpcall(function()
                return reader:read(case.buf, pos, case.stop, contexts[step[1]] or nil)
            end, bug)
            if not okay then
                if type(value) == "table" and (value.short or value.fail) then
                    out[#out + 1] = string.format("E\t%d\t%d\t%s\t%d\t%s", n, i,
                        value.short and "short" or "fail", value.offset, V.hex(value.reason))
                    return
                end
                error(value, 0)
            end
            if type(after) ~= "number" then error("a reader returned no position", 0) end
            out[#out + 1] = string.format("V\t%d\t%d\t%d\t%s\t%s", n, i, after,
                open and "1" or "0", V.hex(V.json(value)))
            pos = after
        end
    end, bug)
    if not ok then
        local message = type(e) == "table" and tostring(e.reason) or tostring(e)
        out[#out + 1] = string.format("X\t%d\t%s", n, V.hex(message))
    end
end
io.stdout:write(table.concat(out, "\n"), "\n")
"""


@dataclass
class Step:
    """What one step of a case gave: its value's JSON (bytes, as V.json writes it), the position
    after it and whether ``stop`` decided it (a reader's third result)."""

    json: bytes
    pos: int
    open: bool


@dataclass
class Outcome:
    """What the Lua readers made of one case: the steps read, then the error that ended it (its
    step, 1-based, kind "short" or "fail", offset and reason), if any."""

    steps: list[Step] = field(default_factory=list)
    error: tuple[int, str, int, str] | None = None


def read_cases(cases: list[tuple[bytes, int, int, list[tuple[str, str, tuple]]]]) -> list[Outcome]:
    """Run each case ``(buf, pos, stop, [(module, type, args), ...])`` through the Lua readers in
    one tshark run. A reader that raises anything but V.short or V.fail is a LuaError."""
    lines = []
    for buf, pos, stop, steps in cases:
        lines.append(
            '{hex = "%s", pos = %d, stop = %d, steps = %s}'
            % (bytes(buf).hex(), pos, stop, lua_literal([[m, t, list(a)] for m, t, a in steps]))
        )
    text = run_lua_bytes(_READ_CASES, files={"cases.txt": "\n".join(lines) + "\n"})
    outcomes = [Outcome() for _ in cases]
    bugs = []
    for line in text.decode("ascii").splitlines():
        if not line:
            continue
        tag, *parts = line.split("\t")
        case = int(parts[0]) - 1
        if tag == "V":
            outcomes[case].steps.append(
                Step(bytes.fromhex(parts[4]), int(parts[2]), parts[3] == "1")
            )
        elif tag == "E":
            reason = bytes.fromhex(parts[4]).decode("utf-8", "replace")
            outcomes[case].error = (int(parts[1]), parts[2], int(parts[3]), reason)
        else:
            bugs.append(f"case {case}: {bytes.fromhex(parts[1]).decode('utf-8', 'replace')}")
    if bugs:
        raise LuaError("\n".join(bugs[:5]) + (f"\n… {len(bugs)} in all" if len(bugs) > 5 else ""))
    return outcomes
