"""runtime/fieldtypes/texts.py: delimited bytes and strings, ASCII decimals, literal tokens.
Each value is read whole, measured while its bytes arrive (one at a time here), and written
back to the bytes it came from; what a peer must not send is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protoc_x.runtime.api import DecodeError, measured
from protoc_x.runtime.fieldtypes import texts

from .test_thrift import _measured

CRLF = "\r\n"


@pytest.mark.parametrize(
    "ft, data, value",
    [
        (texts.Bytes(CRLF), b"hello\r\n", b"hello"),
        (texts.Bytes(CRLF), b"\r\n", b""),
        (texts.Bytes(CRLF), b"a\rb\nc\r\n", b"a\rb\nc"),  # a lone \r or \n is data
        (texts.Bytes("\0"), b"abc\0", b"abc"),
        (texts.String(CRLF), "h\u00e9llo \u2603\r\n".encode(), "h\u00e9llo \u2603"),
        (texts.Decimal(CRLF), b"0\r\n", 0),
        (texts.Decimal(CRLF), b"-1\r\n", -1),
        (texts.Decimal(CRLF), b"9223372036854775807\r\n", 2**63 - 1),
        (texts.Decimal(CRLF), b"-9223372036854775808\r\n", -(2**63)),
        (texts.Decimal(" "), b"42 ", 42),
        (texts.Token(CRLF), b"\r\n", None),
    ],
)
def test_a_value_reads_measures_and_writes_back(ft, data, value):
    assert ft.read(data + b"tail", 0, len(data) + 4) == (value, len(data))
    got, end = _measured(ft, data)[0]
    assert end == len(data)
    assert got == (value if ft.VALUE == "int" else None)  # measuring keeps integers only
    if value is not None:
        assert ft.write(value) == data
    else:
        assert ft.write() == data


@pytest.mark.parametrize(
    "data",
    [b"\r\n", b"-\r\n", b"007\r\n", b"-0\r\n", b"+1\r\n", b" 1\r\n", b"1 \r\n", b"0x10\r\n",
     b"1" * 21 + b"\r\n", b"12\n"],
)  # fmt: skip
def test_a_decimal_that_is_not_canonical_is_refused_by_read_and_measure(data):
    ft = texts.Decimal(CRLF)
    with pytest.raises(DecodeError, match="decimal number") as e:  # (or runs past the frame)
        ft.read(data, 0, len(data))
    assert e.value.offset == 0
    with pytest.raises(DecodeError, match="^offset 0: expected a decimal number, found") as e:
        _measured(ft, data + b"\r\n")
    assert e.value.offset == 0


def test_a_decimal_is_refused_at_its_first_bad_byte_not_at_its_delimiter():
    ft = texts.Decimal(CRLF)
    buf = bytearray(b"12x")
    steps = ft.measure(buf, 0)
    with pytest.raises(DecodeError, match=r"expected a decimal number, found b'12x'"):
        next(steps)
    buf = bytearray(b"1" * 21)  # longer than any 64-bit number: no delimiter is waited for
    with pytest.raises(DecodeError, match=r"expected a decimal number, found b'1{21}'$"):
        next(ft.measure(buf, 0))


def test_values_that_run_past_the_frame_or_miss_their_token_are_decode_errors():
    with pytest.raises(DecodeError, match="without"):
        texts.Bytes(CRLF).read(b"hello\r\n", 0, 6)  # the frame ends inside the delimiter
    with pytest.raises(DecodeError, match="runs past"):
        texts.Decimal(CRLF).read(b"12\r\n", 0, 3)
    with pytest.raises(DecodeError, match="expected"):
        texts.Token(CRLF).read(b"\n\r", 0, 2)
    with pytest.raises(DecodeError, match="UTF-8"):
        texts.String(CRLF).read(b"\xff\xfe\r\n", 0, 4)


def test_a_value_holding_its_delimiter_is_refused_on_write():
    with pytest.raises(ValueError, match="cannot hold"):
        texts.Bytes(CRLF).write(b"one\r\ntwo")
    with pytest.raises(ValueError, match="cannot hold"):
        texts.String(CRLF).write("one\r\ntwo")
    with pytest.raises(ValueError, match="longer"):
        texts.Decimal(CRLF).write(10**25)


def test_delimiters_and_tokens_are_bytes():
    with pytest.raises(ValueError, match="0-255"):
        texts.Bytes("\u2603")
    with pytest.raises(ValueError, match="empty"):
        texts.Token("")
    with pytest.raises(ValueError, match="digit"):
        texts.Decimal("0")


class Searched(bytearray):
    """A buffer that counts the bytes its searches cover."""

    examined = 0

    def find(self, sub, start=0, *args):
        self.examined += max(0, len(self) - start)
        return super().find(sub, start, *args)


def test_a_delimiter_split_across_arrivals_is_found_and_each_byte_examined_about_once():
    ft = texts.Bytes("\r\n\r\n")
    data = b"x" * 500 + b"\r\n\r" + b"y" * 100 + b"\r\n\r\n"
    buf = Searched()
    steps = ft.measure(buf, 0)
    asked = [next(steps)]
    assert asked == [4]  # nothing is searched before a whole delimiter could be there
    for b in data:
        buf.append(b)
        if len(buf) < asked[-1]:
            continue
        try:
            asked.append(steps.send(None))
        except StopIteration as done:
            assert done.value == (None, len(data))
            break
    assert asked == list(range(4, 4 + len(asked))), asked[:8]  # then one byte at a time
    # each search resumes where a delimiter could still start: every byte is looked at no
    # more than the delimiter's length times (a search from the start each time: n²/2)
    assert buf.examined <= 4 * len(data), buf.examined


@given(st.binary(max_size=300).filter(lambda b: b"\r\n" not in b))
def test_any_bytes_without_the_delimiter_round_trip(value):
    ft = texts.Bytes(CRLF)
    data = ft.write(value)
    assert ft.read(data, 0, len(data)) == (value, len(data))
    assert measured(ft.measure(data, 0)) == (None, len(data))


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_any_64_bit_integer_round_trips(value):
    ft = texts.Decimal(CRLF)
    data = ft.write(value)
    assert data == str(value).encode() + b"\r\n"
    assert ft.read(data, 0, len(data)) == (value, len(data))
    assert measured(ft.measure(data, 0)) == (value, len(data))
