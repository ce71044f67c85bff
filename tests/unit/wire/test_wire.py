"""The wire format: decode_event's error codes and paths, encoding, helpers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rulebot.errors import EventError
from rulebot.wire import decode as wire
from rulebot.wire.decode import MAX_SAFE_INTEGER, Limits, decode_event, event_id, presence_event
from rulebot.wire.encode import JSON_NS, encode_payload, error_payload

DEFAULT = Limits()
BIG = Limits(max_bytes=10_000_000)


def is_xml_char(c: str) -> bool:
    """The XML 1.0 Char production."""
    o = ord(c)
    return (
        o in (0x9, 0xA, 0xD)
        or 0x20 <= o <= 0xD7FF
        or 0xE000 <= o <= 0xFFFD
        or 0x10000 <= o <= 0x10FFFF
    )


def nest(depth: int, inner: str = "1") -> str:
    """`depth` objects, each the value of key "a", around `inner`."""
    return '{"a":' * depth + inner + "}" * depth


# --- rejected events: (text, limits, code, path) ---------------------------------

REJECTED: list[Any] = [
    # too-large
    pytest.param('{"a":"' + "x" * 70000 + '"}', DEFAULT, "too-large", None, id="too-large-ascii"),
    pytest.param(
        '{"a":"' + "é" * 40000 + '"}', DEFAULT, "too-large", None, id="too-large-counts-utf8-bytes"
    ),
    pytest.param("[" * 70000, DEFAULT, "too-large", None, id="too-large-checked-before-parsing"),
    pytest.param(
        "x" * 11, Limits(max_bytes=10), "too-large", None, id="too-large-even-if-not-json"
    ),
    # invalid-json
    pytest.param("", DEFAULT, "invalid-json", None, id="invalid-json-empty"),
    pytest.param('{"a" 1}', DEFAULT, "invalid-json", None, id="invalid-json-syntax"),
    pytest.param('{"a":1} x', DEFAULT, "invalid-json", None, id="invalid-json-trailing-data"),
    pytest.param('{"a":"\x01"}', DEFAULT, "invalid-json", None, id="invalid-json-raw-control"),
    pytest.param('{"a":"\\x"}', DEFAULT, "invalid-json", None, id="invalid-json-bad-escape"),
    pytest.param('{"a":"', DEFAULT, "invalid-json", None, id="invalid-json-unterminated-string"),
    pytest.param("\ufeff{}", DEFAULT, "invalid-json", None, id="invalid-json-bom"),
    pytest.param('{"a":NaN}', DEFAULT, "invalid-json", "/a", id="invalid-json-nan"),
    pytest.param('{"a":[Infinity]}', DEFAULT, "invalid-json", "/a/0", id="invalid-json-infinity"),
    pytest.param('{"b":-Infinity}', DEFAULT, "invalid-json", "/b", id="invalid-json-neg-infinity"),
    pytest.param("NaN", DEFAULT, "invalid-json", None, id="invalid-json-bare-nan"),
    # duplicate-key
    pytest.param('{"a":1,"a":2}', DEFAULT, "duplicate-key", "/a", id="duplicate-key-top"),
    pytest.param(
        '{"x":[0,{"k":1,"j":2,"k":3}]}',
        DEFAULT,
        "duplicate-key",
        "/x/1/k",
        id="duplicate-key-nested",
    ),
    pytest.param(
        '{"a/b":1,"a/b":1}', DEFAULT, "duplicate-key", "/a~1b", id="duplicate-key-escaped"
    ),
    # not-object
    pytest.param("[1]", DEFAULT, "not-object", None, id="not-object-array"),
    pytest.param('"s"', DEFAULT, "not-object", None, id="not-object-string"),
    pytest.param("null", DEFAULT, "not-object", None, id="not-object-null"),
    pytest.param("12", DEFAULT, "not-object", None, id="not-object-number"),
    pytest.param("[1e400]", DEFAULT, "not-object", None, id="not-object-checked-before-contents"),
    # too-deep
    pytest.param(nest(3), Limits(max_depth=2), "too-deep", "/a/a", id="too-deep-objects"),
    pytest.param(
        '{"a":[0,[[1]]]}', Limits(max_depth=3), "too-deep", "/a/1/0", id="too-deep-arrays"
    ),
    pytest.param(
        '{"a~/":{"\\u0062":[{}]}}',
        Limits(max_depth=3),
        "too-deep",
        "/a~0~1/b/0",
        id="too-deep-key-escapes",
    ),
    pytest.param(
        '{"s":"[[[[[[","a":[1]}',
        Limits(max_depth=1),
        "too-deep",
        "/a",
        id="too-deep-ignores-strings",
    ),
    pytest.param(
        "[" * 100_000,
        BIG,
        "too-deep",
        "/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0" * 2,
        id="too-deep-100000-brackets-no-recursion-error",
    ),
    pytest.param(nest(100_000), BIG, "too-deep", "/a" * 32, id="too-deep-100000-objects"),
    pytest.param(
        '{"a":[[[[', Limits(max_depth=3), "too-deep", "/a/0/0", id="too-deep-before-syntax"
    ),
    # too-many-items
    pytest.param('{"a":[1,2]}', Limits(max_items=3), "too-many-items", "/a/1", id="too-many-items"),
    pytest.param(
        '{"a":{},"b":1}',
        Limits(max_items=2),
        "too-many-items",
        "/b",
        id="too-many-items-counts-objects",
    ),
    # string-too-long
    pytest.param(
        '{"a":"xxxx"}', Limits(max_string=3), "string-too-long", "/a", id="string-too-long"
    ),
    pytest.param('{"abcd":1}', Limits(max_string=3), "string-too-long", "/abcd", id="key-too-long"),
    # number-out-of-range
    pytest.param(
        f'{{"n":{MAX_SAFE_INTEGER + 1}}}', DEFAULT, "number-out-of-range", "/n", id="int-over-2-53"
    ),
    pytest.param(
        f'{{"n":[-{MAX_SAFE_INTEGER + 1}]}}', DEFAULT, "number-out-of-range", "/n/0", id="int-under"
    ),
    pytest.param(
        '{"n":' + "9" * 5000 + "}", DEFAULT, "number-out-of-range", "/n", id="int-5000-digits"
    ),
    pytest.param('{"f":1e400}', DEFAULT, "number-out-of-range", "/f", id="float-overflows"),
    pytest.param('{"f":-1e400}', DEFAULT, "number-out-of-range", "/f", id="float-overflows-neg"),
    # invalid-string
    pytest.param('{"s":"\\ud800"}', DEFAULT, "invalid-string", "/s", id="lone-high-surrogate"),
    pytest.param('{"s":"a\\udc00"}', DEFAULT, "invalid-string", "/s", id="lone-low-surrogate"),
    pytest.param('{"s":"\ud800"}', DEFAULT, "invalid-string", "/s", id="raw-lone-surrogate"),
    pytest.param('{"s":"\\u0000"}', DEFAULT, "invalid-string", "/s", id="nul-escape"),
    pytest.param('{"s":["\\u0008"]}', DEFAULT, "invalid-string", "/s/0", id="backspace-escape"),
    pytest.param('{"s":"\\u000b"}', DEFAULT, "invalid-string", "/s", id="vertical-tab"),
    pytest.param('{"s":"\\f"}', DEFAULT, "invalid-string", "/s", id="form-feed"),
    pytest.param('{"s":"\\u001f"}', DEFAULT, "invalid-string", "/s", id="unit-separator"),
    pytest.param('{"s":"\\ufffe"}', DEFAULT, "invalid-string", "/s", id="u-fffe"),
    pytest.param('{"s":"\uffff"}', DEFAULT, "invalid-string", "/s", id="raw-u-ffff"),
    pytest.param(
        '{"\\u0001":1}', DEFAULT, "invalid-string", "/\\u0001", id="bad-key-path-spelled-xml-safe"
    ),
    pytest.param('{"ok":1,"\\ud800x":2}', DEFAULT, "invalid-string", "/\\ud800x", id="bad-key"),
    # first problem in document order wins
    pytest.param(
        '{"a":"\\u0001","b":1e400}', DEFAULT, "invalid-string", "/a", id="first-problem-wins"
    ),
    pytest.param(
        '{"a":1e400,"\\u0001":1}', DEFAULT, "number-out-of-range", "/a", id="keys-in-document-order"
    ),
]


@pytest.mark.parametrize(("text", "limits", "code", "path"), REJECTED)
def test_rejected(text: str, limits: Limits, code: str, path: str | None) -> None:
    with pytest.raises(EventError) as info:
        decode_event(text, limits)
    assert (info.value.code, info.value.path) == (code, path)
    assert info.value.message
    assert all(is_xml_char(c) for c in info.value.message + (info.value.path or ""))


def test_invalid_json_message_has_line_and_column() -> None:
    with pytest.raises(EventError) as info:
        decode_event('{\n "a" 1}', DEFAULT)
    assert info.value.message == "Expecting ':' delimiter at line 2 column 6"


# --- accepted events ---------------------------------------------------------------

ACCEPTED: list[Any] = [
    pytest.param("{}", DEFAULT, {}, id="empty-object"),
    pytest.param(' \n{"a" : 1 }\t', DEFAULT, {"a": 1}, id="whitespace"),
    pytest.param(
        f'{{"n":{MAX_SAFE_INTEGER},"m":-{MAX_SAFE_INTEGER}}}',
        DEFAULT,
        {"n": MAX_SAFE_INTEGER, "m": -MAX_SAFE_INTEGER},
        id="int-at-2-53-bound",
    ),
    pytest.param('{"f":1e308,"g":-0.0}', DEFAULT, {"f": 1e308, "g": -0.0}, id="big-float"),
    pytest.param('{"s":"\\t\\n\\r"}', DEFAULT, {"s": "\t\n\r"}, id="tab-newline-cr"),
    pytest.param('{"s":"\\ud83d\\ude00"}', DEFAULT, {"s": "\U0001f600"}, id="surrogate-pair"),
    pytest.param('{"s":"\\ufffd\\ue000\\u007f"}', DEFAULT, {"s": "\ufffd\ue000\x7f"}, id="edges"),
    pytest.param('{"a":"[{\\"x"}', Limits(max_depth=1), {"a": '[{"x'}, id="brackets-in-string"),
    pytest.param(nest(2), Limits(max_depth=2), {"a": {"a": 1}}, id="depth-at-limit"),
    pytest.param('{"a":[1]}', Limits(max_items=3), {"a": [1]}, id="items-at-limit"),
    pytest.param('{"abc":"xyz"}', Limits(max_string=3), {"abc": "xyz"}, id="string-at-limit"),
    pytest.param('{"a":"é"}', Limits(max_bytes=10), {"a": "é"}, id="bytes-at-limit"),
    pytest.param(
        '{"id":1,"t":true,"f":false,"z":null}',
        DEFAULT,
        {"id": 1, "t": True, "f": False, "z": None},
        id="literals",
    ),
]


@pytest.mark.parametrize(("text", "limits", "expected"), ACCEPTED)
def test_accepted(text: str, limits: Limits, expected: dict[str, Any]) -> None:
    event = decode_event(text, limits)
    assert event == expected
    assert type(event) is dict
    assert decode_event(encode_payload(event), limits) == expected


def test_duplicate_free_objects_are_plain_dicts() -> None:
    event = decode_event('{"a":{"b":[{"c":1}]}}', DEFAULT)
    assert type(event["a"]) is dict
    assert type(event["a"]["b"][0]) is dict


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"max_bytes": 0}, id="zero-bytes"),
        pytest.param({"max_items": -1}, id="negative-items"),
        pytest.param({"max_depth": 10_000}, id="depth-over-ceiling"),
        pytest.param({"max_string": True}, id="bool-is-not-a-limit"),
    ],
)
def test_limits_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Limits"):
        Limits(**kwargs)


# --- encoding ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param({"a": [1, 2], "b": None}, '{"a":[1,2],"b":null}', id="compact"),
        pytest.param({"é": "€😀"}, '{"é":"€😀"}', id="not-ascii-escaped"),
        pytest.param({"c": "\x01<&>"}, '{"c":"\\u0001<&>"}', id="controls-escaped-by-json"),
        pytest.param({"s": "\ud800"}, '{"s":"\\ud800"}', id="lone-surrogate-escaped"),
        pytest.param({"\uffff": "\ufffe"}, '{"\\uffff":"\\ufffe"}', id="nonchars-escaped"),
    ],
)
def test_encode_payload(payload: Any, expected: str) -> None:
    text = encode_payload(payload)
    assert text == expected
    assert all(is_xml_char(c) for c in text)
    assert json.loads(text) == payload


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"x": float("nan")}, id="nan"),
        pytest.param({"x": float("inf")}, id="inf"),
    ],
)
def test_encode_payload_refuses_nan(payload: Any) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        encode_payload(payload)


# --- helpers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(("bad", "m"), {"error": {"code": "bad", "message": "m"}}, id="minimal"),
        pytest.param(
            ("bad", "m", "/a/0", "e1"),
            {"error": {"code": "bad", "message": "m", "path": "/a/0", "id": "e1"}},
            id="path-and-id",
        ),
        pytest.param(
            ("bad", "m", "", 0),
            {"error": {"code": "bad", "message": "m", "path": "", "id": 0}},
            id="root-path-and-zero-id-kept",
        ),
        pytest.param(
            ("bad", "m", None, 7), {"error": {"code": "bad", "message": "m", "id": 7}}, id="id-only"
        ),
    ],
)
def test_error_payload(args: tuple[Any, ...], expected: dict[str, Any]) -> None:
    assert error_payload(*args) == expected


def test_error_payload_from_event_error_is_sendable() -> None:
    with pytest.raises(EventError) as info:
        decode_event('{"id":"x","\\ud800":1}', DEFAULT)
    err = info.value
    text = encode_payload(error_payload(err.code, err.message, err.path, "x"))
    assert all(is_xml_char(c) for c in text)
    assert json.loads(text)["error"]["path"] == "/\\ud800"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        pytest.param({"id": "abc"}, "abc", id="string"),
        pytest.param({"id": 42}, 42, id="int"),
        pytest.param({"id": "x" * 256}, "x" * 256, id="string-at-256"),
        pytest.param({"id": "x" * 257}, None, id="string-over-256"),
        pytest.param({"id": True}, None, id="bool-is-not-an-id"),
        pytest.param({"id": 1.5}, None, id="float"),
        pytest.param({"id": None}, None, id="null"),
        pytest.param({"id": [1]}, None, id="array"),
        pytest.param({}, None, id="missing"),
    ],
)
def test_event_id(event: dict[str, Any], expected: str | int | None) -> None:
    assert event_id(event) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            (None, None, None, None), {"type": "presence", "presence": "available"}, id="bare"
        ),
        pytest.param(
            ("available", "away", "lunch", 5),
            {
                "type": "presence",
                "presence": "available",
                "show": "away",
                "status": "lunch",
                "priority": 5,
            },
            id="full",
        ),
        pytest.param(
            ("unavailable", None, "bye", None),
            {"type": "presence", "presence": "unavailable", "status": "bye"},
            id="unavailable",
        ),
        pytest.param(
            ("subscribe", None, None, 0),
            {"type": "presence", "presence": "subscribe", "priority": 0},
            id="subscribe-zero-priority-kept",
        ),
    ],
)
def test_presence_event(args: tuple[Any, ...], expected: dict[str, Any]) -> None:
    assert presence_event(*args) == expected


def test_json_namespace() -> None:
    assert JSON_NS == "urn:xmpp:json:0"


# --- properties ----------------------------------------------------------------------

any_char = st.characters(codec=None, exclude_categories=())  # surrogates and controls too


def json_values(finite: bool) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**60), 2**60)
        | st.floats(allow_nan=False, allow_infinity=not finite)
        | st.text(any_char, max_size=8)
    )
    keys = st.text(any_char, max_size=4)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=20,
    )


values = json_values(finite=False)
json_texts = st.builds(
    lambda obj, ascii_: json.dumps(obj, ensure_ascii=ascii_),
    st.dictionaries(st.text(any_char, max_size=4), values, max_size=5) | values,
    st.booleans(),
)
texts = (
    st.text()
    | st.text(any_char)
    | st.binary().map(lambda b: b.decode("utf-8", "replace"))
    | json_texts
    | st.text(st.sampled_from('{}[]",:\\ 1-eE.aun'), max_size=40)
)
small = st.builds(
    Limits,
    max_bytes=st.integers(1, 300),
    max_depth=st.integers(1, 6),
    max_string=st.integers(1, 10),
    max_items=st.integers(1, 30),
)


@settings(max_examples=300, deadline=None)
@given(text=texts, limits=st.just(DEFAULT) | small)
def test_decode_is_total_and_round_trips(text: str, limits: Limits) -> None:
    outcome = decode_or_error(text, limits)
    if isinstance(outcome, EventError):
        assert outcome.code in CODES
        assert all(is_xml_char(c) for c in outcome.message + (outcome.path or ""))
        return
    encoded = encode_payload(outcome)
    assert all(is_xml_char(c) for c in encoded)
    assert decode_event(encoded, DEFAULT) == outcome


def decode_or_error(text: str, limits: Limits) -> dict[str, Any] | EventError:
    """decode_event's result or its EventError; anything else escapes and fails the test."""
    try:
        event = decode_event(text, limits)
    except EventError as err:
        return err
    assert type(event) is dict
    return event


CODES = {
    "too-large",
    "invalid-json",
    "duplicate-key",
    "not-object",
    "too-deep",
    "too-many-items",
    "string-too-long",
    "number-out-of-range",
    "invalid-string",
}


@settings(max_examples=150, deadline=None)
@given(payload=json_values(finite=True))
def test_encode_is_always_xml_safe(payload: Any) -> None:
    text = encode_payload(payload)
    assert all(is_xml_char(c) for c in text)
    assert json.loads(text) == payload


def decode_walking_everything(text: str, limits: Limits) -> dict[str, Any] | EventError:
    """decode_event with its shortcut off: every value goes through the full walk."""
    original = wire._plainly_within
    wire._plainly_within = lambda *_args: False
    try:
        return decode_or_error(text, limits)
    finally:
        wire._plainly_within = original


plain_json_texts = st.builds(  # what the shortcut is for: no escapes, small
    lambda obj: json.dumps(obj, ensure_ascii=False),
    st.dictionaries(st.text(st.characters(codec="utf-8", exclude_characters='\\"'), max_size=4),
                    values, max_size=5),
).filter(lambda t: "\\" not in t)


@settings(max_examples=400, deadline=None)
@given(text=texts | plain_json_texts | plain_json_texts.map(lambda t: t.replace("}", ',"a":1}', 1)),
       limits=st.just(DEFAULT) | small)
def test_the_plain_event_shortcut_decides_exactly_as_the_full_walk(text: str,
                                                                    limits: Limits) -> None:
    fast, slow = decode_or_error(text, limits), decode_walking_everything(text, limits)
    if isinstance(slow, EventError):
        assert isinstance(fast, EventError), text
        assert (fast.code, fast.message, fast.path) == (slow.code, slow.message, slow.path)
    else:
        assert fast == slow


@pytest.mark.parametrize(("text", "code"), [
    ('{"a":1e999}', "number-out-of-range"),
    ('{"a":[1,{"b":1,"b":2}]}', "duplicate-key"),
    ('{"a":12345678901234567890}', "number-out-of-range"),
    ('{"a":"\\u0001"}', "invalid-string"),
])
def test_the_shortcut_leaves_every_problem_to_the_walk(text: str, code: str) -> None:
    with pytest.raises(EventError) as err:
        decode_event(text, DEFAULT)
    assert err.value.code == code
    assert not wire._plainly_within(text, wire._DECODER.decode(text), DEFAULT)


def test_a_plain_small_event_takes_the_shortcut() -> None:
    text = '{"type":"chat","to":"bob@localhost","n":[1,2.5,true,null],"o":{"k":"v"}}'
    assert wire._plainly_within(text, wire._DECODER.decode(text), DEFAULT)
