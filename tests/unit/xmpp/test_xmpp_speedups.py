"""rulebot.xmpp.patches against the slixmpp functions they replace (Hypothesis).

The tests call `fast_*` and `original_*` directly, so they mean the same
whether or not some other test has already run `install()`.
"""

from __future__ import annotations

import importlib
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slixmpp.stanza import Iq, Message
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.matcher import MatchXPath, StanzaPath

from rulebot.xmpp.patches import (
    _plan,
    fast_escape,
    fast_match,
    fast_stanzapath_match,
    original_escape,
    original_match,
    original_stanzapath_match,
)

# ---------------------------------------------------------------- the originals


def test_originals_are_slixmpps_own() -> None:
    # If install() had run before the module captured them, the "originals"
    # would be the fast versions and every comparison below would be vacuous.
    tostring = importlib.import_module("slixmpp.xmlstream.tostring")
    assert original_escape is not fast_escape
    assert original_escape.__module__ == "slixmpp.xmlstream.tostring"
    assert original_escape.__qualname__ == "escape"
    assert original_match is not fast_match
    assert original_match.__module__ == "slixmpp.xmlstream.matcher.xpath"
    assert original_match.__qualname__ == "MatchXPath.match"
    assert getattr(tostring, "escape") in (original_escape, fast_escape)  # noqa: B009


# ---------------------------------------------------------------- escape

texts = st.one_of(
    st.text(),
    st.text(alphabet="&<>'\"a ;]", max_size=40),
    st.lists(st.sampled_from(["&", "<", ">", "'", '"', "&amp;", "&lt;", "&quot;", "]]>", "]]",
                              "é", "\U0001f600", "\x00", "\n", "a", ""]),
             max_size=20).map("".join),
)


@settings(max_examples=2000, deadline=None, derandomize=True, database=None)
@given(text=texts)
def test_fast_escape_equals_original(text: str) -> None:
    assert fast_escape(text) == original_escape(text)
    assert fast_escape(text, False) == original_escape(text, False)
    assert fast_escape(text, use_cdata=False) == original_escape(text, use_cdata=False)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(text=texts)
def test_fast_escape_with_cdata_equals_original(text: str) -> None:
    assert fast_escape(text, True) == original_escape(text, True)
    assert fast_escape(text, use_cdata=True) == original_escape(text, use_cdata=True)


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("", ""),
        ("plain", "plain"),
        ("&", "&amp;"),
        ("&amp;", "&amp;amp;"),
        ("<a href='x'>\"&\"</a>", "&lt;a href=&apos;x&apos;&gt;&quot;&amp;&quot;&lt;/a&gt;"),
        ('{"type": "chat", "text": "a < b & c"}',
         "{&quot;type&quot;: &quot;chat&quot;, &quot;text&quot;: &quot;a &lt; b &amp; c&quot;}"),
        ("]]>", "]]&gt;"),
        ("é\U0001f600", "é\U0001f600"),
    ],
)
def test_fast_escape_examples(text: str, escaped: str) -> None:
    assert fast_escape(text) == escaped
    assert original_escape(text) == escaped


def test_fast_escape_with_cdata_delegates(monkeypatch: pytest.MonkeyPatch) -> None:
    import rulebot.xmpp.patches as speedups

    calls: list[tuple[str, bool]] = []

    def spy(text: str, use_cdata: bool = False) -> str:
        calls.append((text, use_cdata))
        return "from the original"

    monkeypatch.setattr(speedups, "original_escape", spy)
    assert speedups.fast_escape("a<b", True) == "from the original"
    assert speedups.fast_escape("a<b", use_cdata=True) == "from the original"
    assert calls == [("a<b", True), ("a<b", True)]
    assert speedups.fast_escape("a<b") == "a&lt;b"  # the fast path never calls it
    assert len(calls) == 2


# ---------------------------------------------------------------- MatchXPath

TAGS = [
    "{jabber:client}message", "{jabber:client}body", "{jabber:client}iq",
    "{jabber:client}presence", "{urn:xmpp:json:0}json", "{urn:xmpp:sm:3}a",
    "{http://etherx.jabber.org/streams}error", "{x}y", "{a}b", "{jabber:server}message",
    "body", "message",
]
PLAIN = [
    "{jabber:client}message/{jabber:client}body",
    "{jabber:client}message/{urn:xmpp:json:0}json",
    "{jabber:client}message",
    "{urn:xmpp:sm:3}a",
    "{http://etherx.jabber.org/streams}error",
    "{jabber:client}message/{jabber:client}body/{x}y",
    "{jabber:client}iq/{a}b",
    "{jabber:client}iq/{a}b/{x}y/{jabber:client}body",
    "{x}y/{x}y",
    # slixmpp's fix_ns gives the namespace to unqualified later steps and drops
    # empty steps, so these are plain paths by the time match() sees them
    "{jabber:client}message/body",
    "{jabber:client}message//{x}y",
    "{jabber:client}message/{jabber:client}body/",
]
NOT_PLAIN = [
    "{jabber:client}message@type=chat",
    "{jabber:client}message/*",
    "{jabber:client}iq/{a}b[@x]",
    "{jabber:client}message/{jabber:client}body[1]",
    "*/{jabber:client}body",
    "*",
    "message",
    "{jabber:client}message/.",
    "{jabber:client}message/..",
    "{jabber:client}iq[@type='get']",
    "{*}message",
    "{jabber:client}message/{*}body",
    "{jabber:client}*",
]
CRITERIA = PLAIN + NOT_PLAIN


# Trees as (tag, attributes, children) of depth at most 3 below the root; built
# into fresh ElementTree elements inside each test run.
Spec = tuple[str, dict[str, str], list[Any]]
_attributes = st.dictionaries(st.sampled_from(["type", "x", "id"]),
                              st.sampled_from(["chat", "get", "1", ""]), max_size=2)


# Below the root mostly the tags the criteria look for, so that siblings with
# the same tag (only the second one leading on) are common.
CHILD_TAGS = ["{jabber:client}body", "{x}y", "{urn:xmpp:json:0}json", "{a}b", "body",
              "{jabber:client}message"]


def _level(children: st.SearchStrategy[Any] | None, most: int, tags: list[str]
           ) -> st.SearchStrategy[Spec]:
    kids: st.SearchStrategy[list[Any]] = (
        st.just([]) if children is None else st.lists(children, max_size=most))
    return st.tuples(st.sampled_from(tags), _attributes, kids)


trees = _level(_level(_level(_level(None, 0, CHILD_TAGS), 2, CHILD_TAGS), 3, CHILD_TAGS), 3,
               TAGS)


def build(spec: Spec) -> ET.Element:
    tag, attributes, children = spec
    element = ET.Element(tag, attributes)
    element.extend(build(child) for child in children)
    return element


def wrap(element: ET.Element, how: str) -> Any:
    if how == "message" and element.tag == "{jabber:client}message":
        return Message(None, xml=element)  # type: ignore[no-untyped-call]
    if how == "iq" and element.tag == "{jabber:client}iq":
        return Iq(None, xml=element)  # type: ignore[no-untyped-call]
    return StanzaBase(None, xml=element)


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "value", fn(*args)
    except Exception as exc:
        return "raised", (type(exc), str(exc))


@settings(max_examples=800, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(criteria=st.sampled_from(CRITERIA), tree=trees,
       how=st.sampled_from(["base", "message", "iq"]))
def test_fast_match_equals_original(criteria: str, tree: Spec, how: str) -> None:
    element = build(tree)
    matcher = MatchXPath(criteria)
    stanza = wrap(element, how)
    before = ET.tostring(element)
    want = outcome(original_match, matcher, stanza)
    got = outcome(fast_match, matcher, stanza)
    assert got == want, f"{criteria!r} on {ET.tostring(element)!r}"
    if got[0] == "value":
        assert got[1] in (True, False)
    assert stanza.xml is element
    assert ET.tostring(element) == before  # neither touches the stanza


# Random paths built from steps, to try _plan's parser on more than the list above.
steps = st.sampled_from([*TAGS, "*", ".", "..", "{jabber:client}body[1]", "{a}b[@x]",
                         "{*}message", "{*}body", "{jabber:client}*", "{}message", "{a*b}c",
                         "{jabber:client}message[@type='chat']", "{a}b-c", "{a}_b", "{a}b.c",
                         "{a b}c", "{urn:x:1}y2"])
paths = st.builds(lambda first, rest, end: first + "".join(s + t for s, t in rest) + end, steps,
                  st.lists(st.tuples(st.sampled_from(["/", "//", "/", ""]), steps),
                           max_size=3),
                  st.sampled_from(["", "", "", "/"]))


@settings(max_examples=800, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(criteria=paths, tree=trees)
def test_fast_match_equals_original_on_generated_paths(criteria: str, tree: Spec) -> None:
    element = build(tree)
    stanza = StanzaBase(None, xml=element)
    matcher = MatchXPath(criteria)
    want = outcome(original_match, matcher, stanza)
    got = outcome(fast_match, matcher, stanza)
    assert got == want, f"{criteria!r} (fixed: {matcher._criteria!r}) on {ET.tostring(element)!r}"
    # The same path as written, without fix_ns: trailing and double slashes, bare names.
    matcher._criteria = criteria
    want = outcome(original_match, matcher, stanza)
    got = outcome(fast_match, matcher, stanza)
    assert got == want, f"raw {criteria!r} on {ET.tostring(element)!r}"


@settings(max_examples=800, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, data=st.data())
def test_fast_match_equals_original_on_paths_into_the_tree(tree: Spec, data: st.DataObject
                                                           ) -> None:
    # Criteria that follow one branch of the stanza (often not its first child),
    # sometimes with the last step changed: matches are common, not accidents.
    element = build(tree)
    path, node = [element.tag], element
    while len(node) and data.draw(st.booleans()):
        node = node[data.draw(st.integers(0, len(node) - 1))]
        path.append(node.tag)
    if data.draw(st.booleans()):
        path[-1] = data.draw(st.sampled_from(CHILD_TAGS))
    criteria = "/".join(path)
    stanza = StanzaBase(None, xml=element)
    matcher = MatchXPath(criteria)
    want = outcome(original_match, matcher, stanza)
    assert outcome(fast_match, matcher, stanza) == want, (
        f"{criteria!r} on {ET.tostring(element)!r}")


def _tree(*tags: str) -> ET.Element:
    """A chain of elements: tags[0] containing tags[1] containing ..."""
    root = ET.Element(tags[0])
    parent = root
    for tag in tags[1:]:
        parent = ET.SubElement(parent, tag)
    return root


@pytest.mark.parametrize("criteria", CRITERIA)
def test_every_criteria_both_matches_and_misses(criteria: str) -> None:
    # Guards the properties from comparing only "no match" answers.
    matcher = MatchXPath(criteria)
    hit = _tree("{jabber:client}message", "{jabber:client}body", "{x}y")
    hit.set("type", "chat")
    for tag in ("{urn:xmpp:json:0}json", "body", "{x}y"):
        ET.SubElement(hit, tag)
    candidates = [hit, _tree("{jabber:client}iq", "{a}b", "{x}y", "{jabber:client}body"),
                  _tree("{urn:xmpp:sm:3}a"), _tree("{http://etherx.jabber.org/streams}error"),
                  _tree("{x}y", "{x}y"), _tree("{jabber:server}message"), _tree("message")]
    candidates[1].find("{a}b").set("x", "1")  # type: ignore[union-attr]
    candidates[1].set("type", "get")
    answers = set()
    for element in candidates:
        stanza = StanzaBase(None, xml=element)
        want = outcome(original_match, matcher, stanza)
        assert outcome(fast_match, matcher, stanza) == want
        answers.add(want)
    if criteria in PLAIN:
        assert answers == {("value", True), ("value", False)}


def test_every_branch_is_followed_not_just_the_first() -> None:
    # Only the second <body> has the {x}y child the path asks for.
    root = _tree("{jabber:client}message", "{jabber:client}body")
    ET.SubElement(ET.SubElement(root, "{jabber:client}body"), "{x}y")
    stanza = StanzaBase(None, xml=root)
    matcher = MatchXPath("{jabber:client}message/{jabber:client}body/{x}y")
    assert original_match(matcher, stanza) is True
    assert fast_match(matcher, stanza) is True
    # ... and grandchildren are not children.
    deep = MatchXPath("{jabber:client}message/{x}y")
    assert original_match(deep, stanza) is False
    assert fast_match(deep, stanza) is False


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ("{jabber:client}message", ("{jabber:client}message",)),
        ("{jabber:client}message/{jabber:client}body",
         ("{jabber:client}message", "{jabber:client}body")),
        ("{http://etherx.jabber.org/streams}error", ("{http://etherx.jabber.org/streams}error",)),
        ("{urn:xmpp:sm:3}a/{x}y-z/{x}_w", ("{urn:xmpp:sm:3}a", "{x}y-z", "{x}_w")),
        ("{jabber:client}message/", None),
        ("{jabber:client}message//{jabber:client}body", None),
        ("/{jabber:client}message", None),
        ("", None),
        ("message", None),
        ("{jabber:client}message/body", None),
        ("{jabber:client}message@type=chat", None),
        ("{jabber:client}message/*", None),
        ("{jabber:client}iq/{a}b[@x]", None),
        ("{jabber:client}message[1]", None),
        ("{jabber:client}message/.", None),
        ("{}message", None),
        ("{a}b.c", None),
        ("{a}1b", None),
        ("{a{b}c", None),
        ("{*}message", None),
        ("{jabber:client}message/{*}body", None),
        ("{jabber:client}*", None),
        ("{a*}b", None),
    ],
)
def test_plan(criteria: str, expected: tuple[str, ...] | None) -> None:
    assert _plan(criteria) == expected
    assert _plan(criteria) == expected  # the cached answer too


def test_plain_criteria_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import rulebot.xmpp.patches as speedups

    calls: list[str] = []

    def spy(self: Any, stanza: Any) -> bool:
        calls.append(self._criteria)
        return bool(original_match(self, stanza))

    monkeypatch.setattr(speedups, "original_match", spy)
    stanza = StanzaBase(None, xml=_tree("{jabber:client}message", "{jabber:client}body"))
    for criteria in PLAIN:
        speedups.fast_match(MatchXPath(criteria), stanza)
    assert calls == []
    for criteria in NOT_PLAIN:
        outcome(speedups.fast_match, MatchXPath(criteria), stanza)
    assert calls == [MatchXPath(c)._criteria for c in NOT_PLAIN]


WILDCARDS = ["{*}message", "{jabber:client}message/{*}body", "{*}message/{*}body",
             "{*}iq/{a}b"]


@pytest.mark.parametrize("criteria", WILDCARDS)
def test_wildcard_namespace_matches_like_the_original(criteria: str) -> None:
    # Regression (fixed in 29b28e8): _plan took "{*}tag" for a plain step and
    # fast_match compared it literally, while ElementPath reads {*} as "any
    # namespace": the original matched a {jabber:client}message, fast_match did not.
    assert _plan(criteria) is None
    for element in (_tree("{jabber:client}message", "{jabber:client}body"),
                    _tree("{jabber:server}message", "body"), _tree("{x}y")):
        stanza = StanzaBase(None, xml=element)
        matcher = MatchXPath(criteria)
        assert fast_match(matcher, stanza) is original_match(matcher, stanza)
    stanza = StanzaBase(None, xml=_tree("{jabber:client}message", "{jabber:client}body"))
    assert fast_match(MatchXPath("{*}message"), stanza) is True


# ---------------------------------------------------------------- StanzaPath.match

STANZA_PATHS = ["iq/disco_info", "iq/disco_items", "iq@type=get/ping", "iq@type=set/roster",
                "message/body", "message@type=chat", "presence", "message", "body", "sage",
                "{jabber:client}message/body", "{jabber:component:accept}iq/ping", "json",
                "message/json", "iq", "essa", "{x}y/z"]


def stanza_of(tag: str, namespace: str, kind: str, tree: Spec) -> Any:
    element = build((f"{{{namespace}}}{tag}", tree[1], tree[2]))
    if kind == "typed" and tag == "message":
        stanza: Any = Message(None, xml=element)  # type: ignore[no-untyped-call]
    elif kind == "typed" and tag == "iq":
        stanza = Iq(None, xml=element)  # type: ignore[no-untyped-call]
    else:
        stanza = StanzaBase(None, xml=element)
    stanza.namespace = namespace  # as the stream's _build_stanza leaves it
    return stanza


@settings(max_examples=600, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(STANZA_PATHS), tree=trees,
       tag=st.sampled_from(["message", "iq", "presence", "x"]),
       namespace=st.sampled_from(["jabber:client", "jabber:component:accept"]),
       kind=st.sampled_from(["typed", "base"]))
def test_fast_stanzapath_match_equals_original(path: str, tree: Spec, tag: str, namespace: str,
                                               kind: str) -> None:
    matcher = StanzaPath(path)
    want = outcome(original_stanzapath_match, matcher, stanza_of(tag, namespace, kind, tree))
    got = outcome(fast_stanzapath_match, matcher, stanza_of(tag, namespace, kind, tree))
    assert got == want, f"{path!r} on {tag} in {namespace}"


def test_fast_stanzapath_match_says_no_without_the_original(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr("rulebot.xmpp.patches.original_stanzapath_match",
                        lambda matcher, stanza: calls.append(matcher._raw_criteria) or True)
    message = stanza_of("message", "jabber:component:accept", "typed", ("x", {}, []))
    assert not fast_stanzapath_match(StanzaPath("iq/disco_info"), message)
    assert calls == []
    assert fast_stanzapath_match(StanzaPath("message/body"), message)  # left to the original
    assert calls == ["message/body"]


def test_stanzapath_original_is_slixmpps_own() -> None:
    assert original_stanzapath_match is not fast_stanzapath_match
    assert original_stanzapath_match.__qualname__ == "StanzaPath.match"


@pytest.mark.parametrize("namespaces", [("jabber:component:accept", "jabber:server"),
                                        ("jabber:server", "jabber:component:accept")])
def test_fast_stanzapath_match_reads_raw_paths_in_any_stream_namespace(
        namespaces: tuple[str, str]) -> None:
    # A raw path is read against the stanza's own namespace: "iq" matches an
    # iq of any stream, in whichever order the streams are seen.
    for path in ("iq", "iq@type=get"):
        for namespace in namespaces:
            matcher = StanzaPath(path)
            stanza = stanza_of("iq", namespace, "typed", ("x", {"type": "get"}, []))
            assert fast_stanzapath_match(matcher, stanza) is True, (path, namespace)
            assert original_stanzapath_match(matcher, stanza) is True
