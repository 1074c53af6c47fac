"""The hot path's JSON (orjson) answers as the standard library does where orjson alone would
refuse: upstreams and callers that send such JSON keep working."""

from __future__ import annotations

import json
import math

from core import fastjson


def test_reads_what_json_reads_where_orjson_refuses() -> None:
    assert fastjson.loads(b'{"a": "\\ud800"}') == {"a": "\ud800"}  # a lone surrogate
    assert math.isnan(fastjson.loads("NaN"))
    assert fastjson.loads('{"x": [1, {"y": "é"}]}') == {"x": [1, {"y": "é"}]}


def test_bad_json_raises_a_value_error_as_json_does() -> None:
    for raw in (b"{", b"", b'{"a": 1,}'):
        try:
            fastjson.loads(raw)
        except ValueError:
            continue
        raise AssertionError(f"{raw!r} was accepted")


def test_writes_utf8_and_valid_json_even_for_what_orjson_cannot_write() -> None:
    assert fastjson.dumps({"t": "é ✓"}) == '{"t":"é ✓"}'.encode()
    for value in ({"t": "x\ud800y"}, {1: "a"}, {"n": 10**30}):
        raw = fastjson.dumps(value)
        assert json.loads(raw) == json.loads(json.dumps(value))
    assert fastjson.dumps({"a": 1}, indent=True) == b'{\n  "a": 1\n}'


def test_what_orjson_reads_holds_no_lone_surrogate_and_is_said_so() -> None:
    """web/inputs.parse_json searches for lone surrogates only in what the standard library
    read: this pins the orjson behaviour that relies on."""
    assert fastjson.loads_noting_origin(b'{"a": ["\\ud83d\\ude00", "\xc3\xa9"]}') == (
        {"a": ["\U0001F600", "é"]}, True)
    for raw, expected in ((b'{"a": "\\ud800"}', {"a": "\ud800"}),  # an escaped lone surrogate
                          (b'["\xed\xa0\x80"]', ["\ud800"]),  # the same as UTF-8 bytes
                          (b'{"\\udfff": 1}', {"\udfff": 1})):  # in a key
        assert fastjson.loads_noting_origin(raw) == (expected, False)
    # Deeper than orjson reads is deeper than the standard library can (parse_json: 400).
    deep = b"[" * 1100 + b"]" * 1100
    try:
        fastjson.loads_noting_origin(deep)
    except RecursionError:
        return
    raise AssertionError("1,100 levels were read")
