"""The typed scan: the fast lane's ``scan`` as a Cython module, ``<name>.pyx``, that a package
build compiles (``protoc-x build --typed DIR``: typed/ here; docs/performance.md).

It is the codec's own ``scan``, from the same emitter with the same steps and errors, with
three things changed:

- the fixed-width runs are read from the buffer's bytes in C, not by ``struct`` (a run at
  ``pos`` only where its bounds were checked before it, as at ``start``);
- the integers those runs hold are C integers, and positions are C sizes;
- it is a C function, called by a ``scan`` that takes the codec's place.

Everything else, the spec's expressions included, is the Python the codec runs, which Cython
compiles as it is. Where a C integer would overflow (``overflowcheck``) or the buffer is not
``bytes``, the codec's Python scan answers instead, so the two cannot disagree on a frame; the
tests compare them on every spec's frames and on hostile bytes.

The module imports nothing: the loader pairs it with its codec module, whose names it uses
(``bind``), and only with the codec whose text it was generated from (``CODEC_SHA256``).
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import textwrap

import black

from ... import nodes as n
from ...plan import Run, int_type, odd_width, signed
from .code import Code, docsafe

#: the C type of a typed read: (bytes, signed) → type; an unsigned 64-bit integer stays a
#: Python int (a C long long cannot hold it, and unsigned C arithmetic would wrap)
_PY_INT = "object"


def _ctype(size: int, is_signed: bool) -> str:
    return _PY_INT if size == 8 and not is_signed else "long long"


#: the names the .pyx itself declares: the buffer's bytes, the readers and the map walk
_OWN = {"p", "_u", "_s", "_kvmap", "_utf8"}

#: locals that hold a position or a size in the buffer
_SIZES = ("n", "end", "pos", "ido")


class TypedEmitter:
    """Emits the typed scan's reads (a mixin of :class:`protoc_x.backends.python.module.Emitter`)."""

    def typed_reads(self, run: Run, w: Code, at: str, targets: list[str]) -> None:
        """Read each item of ``run`` at ``at`` into its target from the bytes at ``p`` (the
        buffer's), and note the targets' C types."""
        rel = 0
        for item, target in zip(run.items, targets):
            t = int_type(item, self.c)
            odd = odd_width(item, self.c, self.p.order)
            size = t.nbytes
            is_signed = odd[2] if odd else signed(item, self.c)
            little = (odd[1] if odd else run.order) == "little"
            where = f"p + {at} + {rel}" if rel else f"p + {at}"
            w(f"{target} = {'_s' if is_signed else '_u'}({where}, {size}, {int(little)})")
            if isinstance(item, n.Bits):
                # the container, then each field of it (shifted and masked: never negative)
                self.typed_local(target, "unsigned long long")
                for bf in item.fields:
                    self.typed_local(f"v_{bf.name}", "long long")
            else:
                self.typed_local(target, _ctype(size, is_signed))
            rel += size

    def typed_local(self, name: str, ctype: str) -> None:
        known = self.typed_locals.setdefault(name, ctype)
        if known != ctype:  # (a field has one type: this is a compiler bug)
            raise AssertionError(f"typed scan: {name} is both {known} and {ctype}")

    def typed_scan(self, codec: str) -> str:
        """The ``.pyx`` module of the typed scan beside the codec module ``codec`` (its text,
        as rendered by this emitter: the names it declares are the ones the scan uses)."""
        structs = dict(self.mod.structs)
        self.typed, self.typed_locals = True, {}
        try:
            body = self.scan_body()
        finally:
            self.typed = False
        if self.mod.structs != structs:  # (every run read by struct is one the codec reads)
            raise AssertionError("typed scan: a struct the codec module does not declare")
        params = ["self", "buf", "start", "direction"] + (["first"] if self.c.uses_first else [])
        func = f"def _scan({', '.join(params)}):\n" + textwrap.indent(textwrap.dedent(body), "    ")
        func, walked = self.typed_maps(func)
        func, unkept = self.unkept_strings(func)
        func = black.format_str(func, mode=black.Mode(line_length=100))
        tree = ast.parse(func).body[0]
        names = [x for x in ast.walk(tree) if isinstance(x, ast.Name)]
        stored = {x.id for x in names if not isinstance(x.ctx, ast.Load)}
        stored |= {x.name for x in ast.walk(tree) if isinstance(x, ast.ExceptHandler) and x.name}
        loaded = {x.id for x in names if isinstance(x.ctx, ast.Load)}
        # the 'inside' readers the scan calls (``_scan_<target>``), compiled here as they are
        insides = []
        for target, inside_params in sorted(self.scan_insides.items()):
            args = "".join(", " + (p if p == "direction" else f"v_{p}") for p in inside_params)
            text = black.format_str(
                f"def _scan_{target}(buf, pos, end{args}):\n{self.scan_inside(target)}\n",
                mode=black.Mode(line_length=100),
            )
            insides.append(text)
            inner = [x for x in ast.walk(ast.parse(text)) if isinstance(x, ast.Name)]
            local = {x.id for x in inner if not isinstance(x.ctx, ast.Load)}
            loaded |= (
                {x.id for x in inner if isinstance(x.ctx, ast.Load)}
                - local
                - {a.arg for a in ast.parse(text).body[0].args.args}
            )
        own = {f"_scan_{target}" for target in self.scan_insides}
        loaded -= own
        declared = {
            x.id if isinstance(x, ast.Name) else x.asname or x.name.split(".")[0]
            for top in ast.parse(codec).body
            for x in _top_names(top)
        }
        proto = self.cls[: -len("Frame")] + "Protocol"
        wanted = (loaded - stored - set(params) - set(dir(builtins)) - _OWN) | {proto}
        if walked:
            wanted.add("DecodeError")  # (_kvmap's errors)
        missing = wanted - declared
        if missing:
            raise AssertionError(f"typed scan: the codec module declares no {sorted(missing)}")
        decls = []
        for name in sorted(stored):
            ctype = self.typed_locals.get(name)
            if ctype is None and (name in _SIZES or name.startswith(("at_", "z_"))):
                ctype = "Py_ssize_t"
            if name.startswith("m_") and name[2:] in walked:
                ctype = "list"  # (a walked map: its keys' values)
            elif name.startswith("m_") and name[2:] in self.lazy_maps:
                ctype = "dict"  # (a parsed map: its lookups are the dict's own, in C)
            if ctype is not None:
                decls.append((name, ctype))
        lines = func.split("\n")[1:]
        return _render(
            name=self.s.name,
            source_name=docsafe(self.source_name),
            proto=proto,
            imports=sorted(wanted),
            sha=hashlib.sha256(codec.encode("utf-8")).hexdigest(),
            first=self.c.uses_first,
            kvmap=bool(walked),
            text=bool(walked) or unkept,
            insides=insides,
            decls=decls,
            body="\n".join(lines).rstrip() + "\n",
        )

    def typed_maps(self, func: str) -> tuple[str, set[str]]:
        """``func`` with each header map the scan reads only by constant keys (``m.get("k")``)
        walked in place by ``_kvmap``, which decodes only those keys' values, into a list in
        the keys' order (``m[i]``) (a map read otherwise is parsed whole, as the codec does);
        and the maps walked so."""
        parents = {}
        tree = ast.parse(func)
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        edits: list[tuple[ast.AST, str]] = []  # a read of a key → its item of the list
        picks: list[tuple[str, str]] = []  # the map's parse → its walk
        walked: set[str] = set()
        for name in sorted(self.lazy_maps):
            gets: list[tuple[ast.AST, str]] = []
            for x in ast.walk(tree):
                if not (isinstance(x, ast.Name) and x.id == f"m_{name}"):
                    continue
                if not isinstance(x.ctx, ast.Load):
                    continue
                attr = parents[x]
                call = parents.get(attr)
                if not (
                    isinstance(attr, ast.Attribute) and attr.attr == "get"
                    and isinstance(call, ast.Call) and call.func is attr and not call.keywords
                    and len(call.args) == 1 and isinstance(call.args[0], ast.Constant)
                    and isinstance(call.args[0].value, str)
                ):  # fmt: skip
                    break  # read some other way: parsed whole
                gets.append((call, call.args[0].value))
            else:
                t = self.c.fields[name].node.type
                codec, signed = self.length_codec(t), self.signed_length(t)
                full = (
                    f"read_kvmap_fixed(buf, at_{name}, at_{name} + z_{name}, {codec}, {signed})"
                    f" if z_{name} else {{}}"
                )
                try:
                    wire = sorted({k.encode("utf-8") for _, k in gets})
                except UnicodeEncodeError:  # (a key no UTF-8 text has: parsed whole)
                    continue
                if full not in func:
                    continue
                little = (t.length.order or self.p.order) == "little"
                picks.append((full, (
                    f"_kvmap(buf, p, at_{name}, at_{name} + z_{name}, {t.length.nbytes}, "
                    f"{int(little)}, {int(t.length.signed)}, ({''.join(repr(k) + ', ' for k in wire)}))"
                )))  # fmt: skip
                edits += [(call, f"m_{name}[{wire.index(k.encode())}]") for call, k in gets]
                walked.add(name)
        func = _replaced(func, edits)
        for full, pick in picks:
            func = func.replace(full, pick)
        return func, walked

    def unkept_strings(self, func: str) -> tuple[str, bool]:
        """``func`` with each string the scan reads and never uses checked as UTF-8 where it
        is, as its decoding would check it, with no str made; and whether any is."""
        tree = ast.parse(func)
        loaded = {x.id for x in ast.walk(tree) if isinstance(x, ast.Name)
                  and isinstance(x.ctx, ast.Load)}  # fmt: skip
        edits = []
        for x in ast.walk(tree):
            if not (
                isinstance(x, ast.Assign) and len(x.targets) == 1
                and isinstance(x.targets[0], ast.Name) and x.targets[0].id not in loaded
                and isinstance(x.value, ast.Call) and not x.value.args and not x.value.keywords
                and isinstance(x.value.func, ast.Attribute) and x.value.func.attr == "decode"
                and isinstance(x.value.func.value, ast.Subscript)
            ):  # fmt: skip
                continue
            sliced = x.value.func.value
            bounds = sliced.slice
            if not (
                isinstance(sliced.value, ast.Name) and sliced.value.id == "buf"
                and isinstance(bounds, ast.Slice) and bounds.step is None
                and isinstance(bounds.lower, ast.Name) and bounds.lower.id == "pos"
                and isinstance(bounds.upper, ast.BinOp) and isinstance(bounds.upper.op, ast.Add)
                and isinstance(bounds.upper.left, ast.Name) and bounds.upper.left.id == "pos"
            ):  # fmt: skip
                continue
            size = ast.get_source_segment(func, bounds.upper.right)
            edits.append((x, f"_utf8(buf, p, pos, {size})"))
        return _replaced(func, edits), bool(edits)


def _replaced(text: str, edits: list) -> str:
    """``text`` with the source of each node of ``edits`` (node, new text) replaced (the nodes
    of one parse of ``text``, none inside another)."""
    data = text.encode("utf-8")  # (ast's columns count UTF-8 bytes)
    starts = [0]
    for line in data.split(b"\n"):
        starts.append(starts[-1] + len(line) + 1)
    spans = sorted(
        ((starts[x.lineno - 1] + x.col_offset, starts[x.end_lineno - 1] + x.end_col_offset, new)
         for x, new in edits),
        reverse=True,
    )  # fmt: skip
    for begin, end, new in spans:
        data = data[:begin] + new.encode("utf-8") + data[end:]
    return data.decode("utf-8")


def _top_names(stmt) -> list:
    """The names a module-level statement binds (its targets, imports, defs and classes)."""
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return list(stmt.names)
    if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
        return [ast.Name(id=stmt.name)]
    if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        return [x for t in targets for x in ast.walk(t) if isinstance(x, ast.Name)]
    return []


_HEADER = '''\
# cython: language_level=3, infer_types=False, overflowcheck=True, annotation_typing=False
"""The {name} protocol's typed scan, generated by protoc-x from {source_name}. Do not edit.

The codec module {name}.py's ``scan`` with its fixed-width fields read in C into C integers
(protoc_x/backends/python/typed.py). A package build compiles it with Cython where it can;
the loader then uses its ``scan`` for {name}'s protocol, bound to the codec module it was
generated with (``CODEC_SHA256``, ``bind``). Where a C integer would overflow, or the buffer is
not bytes, the codec's own scan answers.
"""

from cpython.bytes cimport PyBytes_AS_STRING
from cpython.unicode cimport PyUnicode_DecodeUTF8
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.string cimport memcmp

#: the SHA-256 of the text of the codec module this scan was generated with
CODEC_SHA256 = "{sha}"

#: the codec module's names the scan uses, set by ``bind`` (None until then)
CODEC_NAMES = (
{imports}
)
{unbound} = None


def bind(codec):
    """Take ``CODEC_NAMES`` from ``codec``, the namespace of the codec module this scan was
    generated with (the loader checks that it is: ``CODEC_SHA256``)."""
    names = globals()
    for name in CODEC_NAMES:
        names[name] = codec[name]


cdef inline unsigned long long _u(const unsigned char* p, int size, bint little) noexcept:
    """The unsigned integer of the ``size`` bytes at ``p``."""
    cdef unsigned long long v = 0
    cdef int i
    for i in range(size):
        v = (v << 8) | p[size - 1 - i if little else i]
    return v


cdef inline long long _s(const unsigned char* p, int size, bint little) noexcept:
    """The two's-complement integer of the ``size`` bytes at ``p``."""
    cdef unsigned long long v = _u(p, size, little)
    if size < 8 and (v >> (8 * size - 1)) & 1:
        return <long long>v - (<long long>1 << (8 * size))
    return <long long>v


{kvmap}def scan(self, buf, start=0, direction=None{first_param}):
    """{proto}.scan (see runtime.api.XProtocol.scan), typed."""
    if type(buf) is bytes:
        try:
            return _scan(self, <bytes>buf, start, direction{first_arg})
        except OverflowError:  # a value past C's integers: the Python scan reads it
            pass
    return {proto}.scan(self, buf, start, direction{first_arg})


cdef object _scan(self, bytes buf, Py_ssize_t start, object direction{first_decl}):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(buf)
{decls}
'''


def _render(name, source_name, proto, imports, sha, first, kvmap, text, insides, decls, body):
    text = _HEADER.format(
        kvmap=(_TEXT if text else "")
        + (_KVMAP if kvmap else "")
        + "".join(f"{inside}\n\n" for inside in insides),
        name=name,
        source_name=source_name,
        proto=proto,
        imports="".join(f'    "{i}",\n' for i in imports).rstrip("\n"),
        unbound=" = ".join(imports),
        sha=sha,
        first_param=", first=False" if first else "",
        first_arg=", first" if first else "",
        first_decl=", object first" if first else "",
        decls="".join(f"    cdef {ctype} {local}\n" for local, ctype in decls).rstrip("\n"),
    )
    return text + body


_TEXT = """\
cdef inline bint _ascii(const unsigned char* s, Py_ssize_t size) noexcept:
    cdef Py_ssize_t i
    for i in range(size):
        if s[i] & 0x80:
            return False
    return True


cdef inline int _utf8(bytes buf, const unsigned char* p, Py_ssize_t pos, Py_ssize_t size) except -1:
    \"\"\"``buf[pos : pos + size].decode()`` for its errors only: a string the scan does not
    keep is checked where it is, with no str made.\"\"\"
    if pos < 0 or size < 0 or pos + size > len(buf):  # (the slice's own bounds: as it has them)
        buf[pos : pos + size].decode()
    elif not _ascii(p + pos, size):
        PyUnicode_DecodeUTF8(<const char*>p + pos, size, NULL)
    return 0


"""

_KVMAP = """\
cdef inline Py_ssize_t _text(const unsigned char* p, Py_ssize_t pos, Py_ssize_t size) except -1:
    \"\"\"Check that the ``size`` bytes at ``pos`` are UTF-8, as str.decode does.\"\"\"
    if not _ascii(p + pos, size):
        try:
            PyUnicode_DecodeUTF8(<const char*>p + pos, size, NULL)
        except UnicodeDecodeError:
            raise DecodeError(pos, "invalid UTF-8 in a map entry") from None
    return 0


cdef inline long long _length(const unsigned char* p, int width, bint little, bint lsigned):
    \"\"\"A map entry's length (an unsigned one past a Py_ssize_t as the largest).\"\"\"
    cdef unsigned long long v
    if lsigned:
        return _s(p, width, little)
    v = _u(p, width, little)
    return <long long>v if v <= <unsigned long long>PY_SSIZE_T_MAX else PY_SSIZE_T_MAX


cdef list _kvmap(bytes buf, const unsigned char* p, Py_ssize_t pos, Py_ssize_t end, int width,
                 bint little, bint lsigned, tuple keys):
    \"\"\"The values of ``keys`` (UTF-8) in the map at ``buf[pos:end]`` (within ``buf``), in the
    keys' order, as ``runtime.api.read_kvmap_fixed(...).get(key)`` gives each (None: not there;
    the last of a key that comes twice): every length and every text is checked as
    read_kvmap_fixed checks them, with its errors, but only those values are decoded.\"\"\"
    cdef list out = [None] * len(keys)
    cdef long long size
    cdef bytes key
    cdef Py_ssize_t k, kept
    while pos < end:
        if end - pos < width:
            raise DecodeError(pos, "map entry length overruns the map")
        size = _length(p + pos, width, little, lsigned)
        if size < 0:
            raise DecodeError(pos, f"bad map key length {size}")
        pos += width
        if size > end - pos:
            raise DecodeError(pos - width, "a map entry overruns the map")
        _text(p, pos, size)
        kept = -1
        for k in range(len(keys)):
            key = <bytes>keys[k]
            if len(key) == size and memcmp(<const char*>key, p + pos, size) == 0:
                kept = k
                break
        pos += size
        if end - pos < width:
            raise DecodeError(pos, "map entry length overruns the map")
        size = _length(p + pos, width, little, lsigned)
        pos += width
        if size < 0:
            if size != -1 or not lsigned:
                raise DecodeError(pos - width, f"bad map value length {size}")
            if kept >= 0:
                out[kept] = None
            continue
        if size > end - pos:
            raise DecodeError(pos - width, "a map entry overruns the map")
        if kept >= 0:
            try:
                out[kept] = buf[pos : pos + size].decode()
            except UnicodeDecodeError:
                raise DecodeError(pos, "invalid UTF-8 in a map entry") from None
        else:
            _text(p, pos, size)
        pos += size
    return out


"""
