"""tars field types keep the bytes a value came as: fields in other forms than TarsGo's,
fields skipped around a value (unknown, out of order, repeated tags), and what follows the last
field a layout names are written back as they came, and only a value that is replaced is
re-encoded."""

from __future__ import annotations

import pytest

from protoc_x.runtime.api import DecodeError
from protoc_x.runtime.fieldtypes import tars

T = tars.TYPES
Int, String, Bytes, Map, Any, Rest = (
    T[n] for n in ("int", "string", "bytes", "map", "any", "rest")
)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def read(reader, data: bytes, pos: int = 0):
    return reader.read(data, pos, len(data), None)


@pytest.mark.parametrize(
    "reader,wire,value",
    [
        (Int(1), "13 0000000000000005", 5),  # int8 for a small value
        (Int(1), "10 00", 0),  # int1 for 0 (TarsGo writes ZERO)
        (Int(1), "11 007f", 127),  # int2 for an int1 value
        (Int(1), "f0 01 05", 5),  # the two-byte head for a tag under 15
        (String(1), "17 00000002 6869", "hi"),  # string4 for a short string
        (Bytes(1), "19 0002 0041 0042", b"AB"),  # a list of int1, not a simple list
        (Bytes(1), "1d 00 010002 4142", b"AB"),  # simple list length as an int2
        (Bytes(1), "1d 10 0002 4142", b"AB"),  # element head with tag 1
        (Bytes(1), "1d 00 1102 4142", None),  # length with tag 1: refused
        (Map(1), "18 0002 0601 61 1601 62 0601 61 1601 63", {"a": "c"}),  # a key twice
        (Map(1), "18 0001 0700000001 61 1601 62", {"a": "b"}),  # string4 key
        (Map(1), "18 010001 0601 61 1601 62", {"a": "b"}),  # int2 length
    ],
)
def test_a_field_in_another_form_is_written_back_as_it_came(reader, wire, value):
    data = h(wire)
    if value is None:
        with pytest.raises(DecodeError):
            read(reader, data)
        return
    got, pos = read(reader, data)
    assert got == value and pos == len(data)
    assert isinstance(got, tars.Wire)
    assert reader.write(got, None) == data
    # the same value, not read from a frame, is written as TarsGo writes it
    plain = dict(got) if isinstance(got, dict) else type(value)(got)
    assert reader.write(plain, None) != data
    assert read(reader, reader.write(plain, None))[0] == value


def test_a_field_in_tarsgo_form_reads_as_a_plain_value():
    for reader, value in [(Int(4), 300), (String(5), "x"), (Bytes(7), b"ab"), (Any(3), None)]:
        if value is None:
            data = Int(3).write(7, None)
        else:
            data = reader.write(value, None)
        got, pos = read(reader, data)
        assert pos == len(data)
        assert not isinstance(got, tars.Wire), reader
    got, _ = read(Map(9), Map(9).write({"k": "v"}, None))
    assert isinstance(got, tars.TarsMap) and got.tars_wire is None


def test_skipped_fields_stay_with_the_value_after_them():
    data = h("00 07") + h("36 01 78") + Int(4).write(9, None)  # tag 0, tag 3, then tag 4
    value, pos = read(Int(4), data)
    assert value == 9 and pos == len(data)
    assert Int(4).write(value, None) == data
    assert Int(4).write(9, None) == h("40 09")  # a new value: only the field


def test_lower_tags_after_a_value_stay_with_it():
    data = Int(4).write(9, None) + h("30 05 10 01") + Int(5).write(1, None)
    value, pos = read(Int(4), data)
    assert pos == 6  # up to tag 5, which a later reader takes
    assert Int(4).write(value, None) == data[:6]
    assert read(Int(5), data, pos) == (1, len(data))


def test_an_absent_field_consumes_nothing():
    data = h("00 07 50 01")  # tag 0, then tag 5
    assert read(Int(3), data) == (None, 0)
    value, pos = read(Int(5), data)
    assert (value, pos) == (1, 4)
    assert Int(5).write(value, None) == data


def test_a_value_is_written_as_it_came_only_under_its_own_tag():
    value, _ = read(Int(1), h("13 0000000000000005"))
    assert Int(2).write(value, None) == h("20 05")
    assert Int(1).write(value, None) == h("13 0000000000000005")
    s, _ = read(String(1), h("17 00000002 6869"))
    assert String(2).write(s, None) == h("26 02 6869")
    assert Any(1).write(b"\x10\x01", None) == h("10 01")


def test_a_decoded_map_is_read_only():
    value, _ = read(Map(1), h("18 0001 0601 61 1601 62"))
    for change in (
        lambda m: m.__setitem__("x", "y"),
        lambda m: m.__delitem__("a"),
        lambda m: m.update(x="y"),
        lambda m: m.pop("a"),
        lambda m: m.setdefault("x", "y"),
        lambda m: m.clear(),
        lambda m: m.popitem(),
    ):
        with pytest.raises(TypeError) as e:
            change(value)
        assert str(e.value) == "a map decoded from a tars frame is read-only: assign a new dict"
    assert value == {"a": "b"}
    copy = dict(value)
    copy["x"] = "y"
    assert Map(1).write(copy, None) == Map(1).write({"a": "b", "x": "y"}, None)


def test_rest_keeps_every_field_after_the_last_named_one():
    fields = h("b6 02 6869") + h("ca 00 01 0b") + h("f0 14 07") + h("30 05")
    assert read(Rest(), fields) == (fields, len(fields))
    assert Rest().write(fields, None) == fields
    assert read(Rest(), b"") == (None, 0)
    assert read(Rest(), fields, len(fields)) == (None, len(fields))
    for bad in ("b6 05 68", "0e", "f0", "0a 00 01"):
        with pytest.raises(DecodeError):
            read(Rest(), h(bad))


def test_detach_gives_the_plain_value_written_as_tarsgo_writes_it():
    cases = [
        (Int(1), "00 07 13 0000000000000005", int),
        (String(1), "00 07 17 00000002 6869", str),
        (Bytes(1), "00 07 19 0001 0041", bytes),
        (Map(1), "00 07 18 0001 0601 61 1601 62", dict),
        (Any(1), "00 07 10 05", bytes),
    ]
    for reader, wire, plain in cases:
        value, _ = read(reader, h(wire))
        assert reader.write(value, None) == h(wire)  # with the tag-0 field skipped before it
        detached = value.detach()
        assert type(detached) is plain and detached == value
        assert type(reader.detach(value)) is plain and reader.detach(detached) is detached
        out = reader.write(detached, None)
        assert not out.startswith(h("00 07"))  # without it
        assert read(reader, out) == (value, len(out))


# ---- in a message: replacing a field keeps the other fields it carried ------------------

# tags 1, 2, 4 named; a tag 0 before 1, a 1 again after 2, a 3 after 4 (out of order)
MESSAGE = h("00 07") + h("10 01") + h("2c") + h("10 09") + h("40 05") + h("30 03")
LAYOUT = [Int(1), Int(2), Int(4), Rest()]


def decode_message(data: bytes) -> list:
    ctx, pos, values = tars.new_context(), 0, []
    for reader in LAYOUT:
        value, pos = reader.read(data, pos, len(data), ctx)
        values.append(value)
    assert pos == len(data)
    return values


def encode_message(values: list) -> bytes:
    ctx = tars.new_context()
    return b"".join(w.write(v, ctx) for w, v in zip(LAYOUT, values))


def test_a_message_re_encodes_as_it_came():
    values = decode_message(MESSAGE)
    assert values[:3] == [1, 0, 5]
    assert encode_message(values) == MESSAGE


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("new", [None, 100])
def test_replacing_or_removing_a_field_keeps_the_fields_it_carried(index, new):
    values = decode_message(MESSAGE)
    values[index] = new
    out = encode_message(values)
    expect = [1, 0, 5]
    expect[index] = new
    assert decode_message(out)[:3] == expect  # what a TARS reader sees
    for other in (h("00 07"), h("10 09"), h("30 03")):  # the others, perhaps moved
        assert other in out
    assert len(out) == len(MESSAGE) - len(LAYOUT[index].write([1, 0, 5][index], None)) + len(
        LAYOUT[index].write(new, None)
    )


def test_a_value_out_of_its_message_writes_what_it_carries():
    values = decode_message(MESSAGE)
    assert Int(1).write(values[0], None) == h("00 07 10 01")
    assert Int(4).write(values[2], None) == h("40 05 30 03")


def test_small_ints_before_a_higher_tag_read_as_tarsgo_wrote_them():
    for value in range(-128, 128):
        field = Int(3).write(value, None)
        for after in (h("40 01"), h("f0 20 01"), h("30 01"), h("0b"), b""):
            data = field + after
            got, pos = read(Int(3), data)
            assert got == value, (value, after)
            assert Int(3).write(got, None) == data[:pos]
            if after in (h("40 01"), h("f0 20 01"), b""):
                assert pos == len(field) and type(got) is int


@pytest.mark.parametrize("tag", [14, 15, 16, 255])
def test_ints_of_high_tags_read_their_own_head(tag):
    for value in (0, 5, -5, 300):
        data = Int(tag).write(value, None) + (Int(tag + 1).write(1, None) if tag < 255 else b"")
        got, pos = read(Int(tag), data)
        assert got == value and pos == len(Int(tag).write(value, None))
        assert type(got) is int  # as TarsGo writes it: a plain int, whatever the head's size
    # a tag-15 reader must not take the long head of another tag for its own
    assert read(Int(15), h("f0 10 05"))[0] is None
    assert read(Int(15), h("f0 0f 05 f0 10 01")) == (5, 3)


def test_a_string4_of_255_bytes_is_kept_as_it_came_and_of_256_is_tarsgo_s():
    short = h("17 000000ff") + b"a" * 255
    value, pos = read(String(1), short)
    assert (value, pos, type(value), value.tars_wire) == ("a" * 255, 260, tars.TarsStr, short)
    assert String(1).write(value, None) == short
    long = h("17 00000100") + b"a" * 256
    value, pos = read(String(1), long)
    assert (value, pos, type(value)) == ("a" * 256, 261, str)


@pytest.mark.parametrize(
    "wire",
    [
        "28 0001 f600 01 61 1601 62",  # a key with a long head
        "28 0001 0601 61 f601 01 62",  # a value with a long head
        "28 0001 07 000000ff" + "61" * 255 + "1601 62",  # a key in a string4 of 255 bytes
        "28 0001 0601 61 17 00000001 62",  # a value in a string4
        "28 0001 0601 61 1601 62 0601 61 1601 63",  # a key twice: one entry, the last value
    ],
)
def test_a_map_in_another_form_is_written_back_as_it_came(wire):
    data = h(wire)
    value, pos = read(Map(2), data)
    assert pos == len(data)
    assert type(value) is tars.TarsMap and value.tars_wire == data
    assert Map(2).write(value, None) == data
    assert Map(2).write(dict(value), None) != data  # as TarsGo writes it


def test_a_map_in_tarsgo_form_reads_without_its_bytes():
    data = h("28 0001 07 00000100") + b"a" * 256 + h("1601 62")  # a key too long for string1
    value, pos = read(Map(2), data)
    assert (value, pos, value.tars_wire) == ({"a" * 256: "b"}, len(data), None)
    assert Map(2).write(value, None) == data


def test_a_map_cannot_write_none():
    for bad in ({"a": None}, {None: "a"}):
        with pytest.raises(ValueError) as e:
            Map(2).write(bad, None)
        assert str(e.value) == "tars map<string, string> cannot hold None"


def test_a_repeated_tag_after_a_value_stays_with_it():
    data = h("10 01 10 02 20 03")  # tag 1 twice, then tag 2
    value, pos = read(Int(1), data)
    assert (value, pos, value.tars_wire) == (1, 4, h("10 01 10 02"))
    assert read(Int(2), data, pos) == (3, 6)


def test_rest_after_a_value_that_carried_other_fields():
    ctx = tars.new_context()
    data = h("10 01 00 07 30 05")  # tag 1, then a lower tag kept with it, then tag 3
    value, pos = Int(1).read(data, 0, len(data), ctx)
    assert (value, pos, value.tars_wire) == (1, 4, h("10 01 00 07"))
    assert ctx.foreign is value
    rest, end = Rest().read(data, pos, len(data), ctx)
    assert (rest, end, type(rest), rest.tars_before) == (h("30 05"), 6, tars.TarsRest, value)
    assert ctx.foreign is None
    # written alone (no message): its bytes
    assert Rest().write(rest, None) == h("30 05")
    # the value before it replaced: rest writes what that value carried
    out = tars.new_context()
    assert Int(1).write(2, out) + Rest().write(rest, out) == h("10 02 00 07 30 05")
    # a zero-size field at the end of the frame is a whole field
    assert read(Rest(), h("1c")) == (h("1c"), 1)
