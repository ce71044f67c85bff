"""CI's fixed-seed share of the fuzzing that `make fuzz` runs at scale."""

from __future__ import annotations

from hypothesis import HealthCheck, given, seed, settings
from targets import check_decoder, check_loader, json_texts, rule_texts

FAST = settings(max_examples=1500, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@seed(20261125)
@FAST
@given(json_texts)
def test_event_decoder_never_crashes(text: str) -> None:
    check_decoder(text)


@seed(20261125)
@FAST
@given(rule_texts)
def test_rule_loader_never_crashes(text: str) -> None:
    check_loader(text)
