"""runtime.fieldtypes.FieldType: the documented base class every field type subclasses."""

from __future__ import annotations

import pytest

from protoc_x.runtime.fieldtypes import MODULES, VALUES, FieldType, tars, thrift


def test_every_built_in_type_is_a_field_type_with_a_known_value():
    for lib, module in MODULES.items():
        for name, cls in module.TYPES.items():
            assert issubclass(cls, FieldType), f"{lib}.{name}"
            assert cls.VALUE in VALUES, f"{lib}.{name}"
            assert len(cls.PARAMS) == len(cls.PARAM_TYPES), f"{lib}.{name}"


def test_the_base_class_gives_the_defaults_the_compiler_assumes():
    # (a type says NULLABLE or WINDOW only when it is so; an instance may say its own VALUE)
    assert (FieldType.PARAMS, FieldType.PARAM_TYPES, FieldType.NULLABLE, FieldType.WINDOW) == (
        (),
        (),
        False,
        False,
    )
    assert tars.TYPES["int"](1).NULLABLE and MODULES["json"].TYPES["object"].WINDOW
    assert thrift.TYPES["field"](1, "i32").VALUE == "int"


def test_read_and_write_are_required():
    class ReadOnly(FieldType):
        def read(self, buf, pos, end, ctx=None):
            return None, pos

    with pytest.raises(TypeError, match="abstract"):
        ReadOnly()

    class Whole(ReadOnly):
        def write(self, value, ctx=None):
            return b""

    assert Whole().read(b"", 0, 0) == (None, 0) and Whole().write(None) == b""
