"""Properties of the engine on arbitrary JSON events (Hypothesis)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulebot.engine.evaluate import evaluate
from rulebot.model import Envelope, Stanza
from rulebot.rules.loader import load_rules
from rulebot.rules.ruleset import RuleSet

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = load_rules(ROOT / "rules")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False,
                                                                         allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
# Events that look like the shipped service's events, and arbitrary ones.
keys = st.sampled_from(["type", "to", "text", "id", "flag"]) | st.text(max_size=6)
types = st.sampled_from(["chat", "announce", "ping", "presence", "nope"]) | json_values
events = st.dictionaries(keys, json_values, max_size=6).flatmap(
    lambda d: st.builds(lambda t: {**d, "type": t}, types) | st.just(d)
)
senders = st.sampled_from(["alice@localhost", "admin@localhost", "mallory@localhost",
                           "x@elsewhere"])
kinds = st.sampled_from(["message", "presence"])


def naive(ruleset: RuleSet) -> RuleSet:
    """The same rule set with the type index turned off: a plain linear scan."""
    return ruleset.linear()


NAIVE = naive(SHIPPED)


def test_shipped_rules_are_indexed_by_type() -> None:
    # Guards the next property from being vacuous.
    dims = {str(d) for d in SHIPPED.index.dims()}
    assert "event.type" in dims
    assert len(dims) >= 2  # and one more, chosen by selectivity


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events, sender=senders, kind=kinds)
def test_engine_is_total_and_deterministic(event: dict[str, Any], sender: str, kind: str
                                           ) -> None:
    env = Envelope(event, sender, sender + "/r", Stanza(kind, "chat", None),  # type: ignore[arg-type]
                   "friend@localhost")
    first = evaluate(SHIPPED, env)
    assert evaluate(SHIPPED, env) == first
    assert first.actions, "every decision says what happens, if only a drop"
    assert first.version == SHIPPED.version


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events, sender=senders, kind=kinds)
def test_type_index_gives_the_same_decision_as_a_linear_scan(
    event: dict[str, Any], sender: str, kind: str
) -> None:
    env = Envelope(event, sender, sender + "/r", Stanza(kind, "chat", None),  # type: ignore[arg-type]
                   "friend@localhost")
    assert evaluate(SHIPPED, env) == evaluate(NAIVE, env)
