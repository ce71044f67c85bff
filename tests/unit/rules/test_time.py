"""Time in rules: durations, instants, zones and intervals (rules.timefns), the
time functions in expressions, `now` in the envelope, the located load-time
checks, and the frozen, steppable clock of `rulebot test`."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rulebot.engine.evaluate import evaluate
from rulebot.model import Envelope, Stanza
from rulebot.rules.loader import check_rules
from rulebot.rules.timefns import (
    TimeError,
    compile_interval,
    now_data,
    parse_duration,
    to_epoch,
    to_iso,
)
from rulebot.ruletest.cases import parse_test_file, run_file

# 2026-12-01 is a Tuesday; Paris is UTC+1 in winter, UTC+2 in summer.
TUESDAY_10_PARIS = to_epoch("2026-12-01T10:00:00+01:00")


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("10m", 600), ("1h30m", 5400), ("7d", 604800), ("2w", 1209600),
    ("1.5h", 5400), (" 5m ", 300), (42, 42), (0.5, 0.5),
])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "7", "7x", "m5", "1h 30m", "-5m", True, None, [1],
                                 float("inf")])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(TimeError):
        parse_duration(bad)


def test_instants_parse_with_an_offset_only() -> None:
    assert to_epoch("2026-12-01T09:00:00Z") == to_epoch("2026-12-01T10:00:00+01:00")
    assert to_iso(to_epoch("2026-12-01T10:00:00+01:00")) == "2026-12-01T09:00:00Z"
    with pytest.raises(TimeError, match="without a UTC offset"):
        to_epoch("2026-12-01T09:00:00")
    with pytest.raises(TimeError, match="out of range"):
        to_epoch(1e15)
    with pytest.raises(TimeError):
        to_epoch(True)


@given(st.integers(min_value=0, max_value=4_102_444_800))
def test_now_data_and_iso_round_trip(seconds: int) -> None:
    data = now_data(seconds + 0.75)
    assert data["epoch"] == seconds
    assert to_epoch(str(data["iso"])) == seconds


def test_an_office_hours_interval_in_its_zone_across_daylight_saving() -> None:
    office = compile_interval("office", {"weekdays": "mon-fri", "times": "09:00-17:00",
                                         "tz": "Europe/Paris"})
    assert office.contains(TUESDAY_10_PARIS)
    assert office.contains(to_epoch("2026-12-01T16:59:00+01:00"))
    assert not office.contains(to_epoch("2026-12-01T17:00:00+01:00"))  # end excluded
    assert not office.contains(to_epoch("2026-12-05T10:00:00+01:00"))  # Saturday
    assert office.contains(to_epoch("2026-07-01T07:30:00Z"))  # 09:30 CEST
    assert not office.contains(to_epoch("2026-07-01T15:30:00Z"))  # 17:30 CEST


def test_a_night_range_belongs_to_the_day_it_starts() -> None:
    nights = compile_interval("n", {"weekdays": "fri", "times": "22:00-06:00"})
    assert nights.contains(to_epoch("2026-12-04T23:00:00Z"))  # Friday 23:00
    assert nights.contains(to_epoch("2026-12-05T05:59:00Z"))  # Saturday morning
    assert not nights.contains(to_epoch("2026-12-05T06:00:00Z"))
    assert not nights.contains(to_epoch("2026-12-04T05:00:00Z"))  # Friday morning: Thursday's


def test_weekday_ranges_wrap_and_lists_combine() -> None:
    weekend = compile_interval("w", {"weekdays": "fri-mon"})
    assert weekend.weekdays == frozenset({4, 5, 6, 0})
    assert compile_interval("l", {"weekdays": ["mon", "wed"]}).weekdays == frozenset({0, 2})


@pytest.mark.parametrize(("spec", "field"), [
    ({"tz": "Europe/Parsi"}, "tz"), ({"tz": "../etc/passwd"}, "tz"),
    ({"weekdays": "mon-fry"}, "weekdays"), ({"weekdays": 3}, "weekdays"),
    ({"times": "9-17"}, "times"), ({"times": "09:00-09:00"}, "times"),
    ({"times": "24:30-25:00"}, "times"), ({"times": ["09:00-12:00", 5]}, "times"),
])
def test_bad_intervals_name_their_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(TimeError) as caught:
        compile_interval("x", spec)
    assert caught.value.field == field


RULES = """version: 1
intervals:
  office: {weekdays: mon-fri, times: "09:00-17:00", tz: Europe/Paris}
rules:
  - name: open
    match: "within('office')"
    actions:
      - reply:
          payload: "{at: now.iso, day: weekday(now.epoch, 'Europe/Paris'), h: hour(now, 'Japan')}"
  - name: closed
    match: "!within('office')"
    actions:
      - reply:
          payload: >-
            {later: to_iso(time_add(now.epoch, '1h30m')),
             since: time_diff(now.iso, '2026-12-01T00:00:00Z'),
             local: join(' ', [date(now.epoch, 'America/New_York'),
                               clock(now.epoch, 'America/New_York')])}
"""


def rules_at(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def decide(tmp_path: Path, now: float | None, text: str = RULES) -> dict[str, object]:
    loaded = check_rules([str(rules_at(tmp_path, text))])
    assert loaded.ruleset is not None, [i.format() for i in loaded.issues]
    env = Envelope({"type": "x"}, "alice@x", "alice@x/r", Stanza("message", "chat"), "bot@x",
                   now)
    d = evaluate(loaded.ruleset, env)
    assert not d.errors or now is None, d.errors
    return {"matched": d.matched, "payload": getattr(d.actions[0], "payload", None),
            "errors": d.errors}


def test_rules_read_the_envelope_clock(tmp_path: Path) -> None:
    got = decide(tmp_path, TUESDAY_10_PARIS)
    assert got["matched"] == ("open",)
    assert got["payload"] == {"at": "2026-12-01T09:00:00Z", "day": "tue", "h": 18}
    evening = decide(tmp_path, TUESDAY_10_PARIS + 8 * 3600)  # 18:00 in Paris
    assert evening["matched"] == ("closed",)
    assert evening["payload"] == {"later": "2026-12-01T18:30:00Z", "since": 17 * 3600 + 0,
                                  "local": "2026-12-01 12:00"}


def test_without_a_clock_within_is_a_rule_error_not_a_match(tmp_path: Path) -> None:
    got = decide(tmp_path, None)
    assert got["matched"] == ()
    errors = got["errors"]
    assert isinstance(errors, tuple)
    assert {e.rule for e in errors} == {"open", "closed"}
    assert all("no `now`" in e.message for e in errors)


def test_a_bad_instant_at_run_time_is_that_rule_s_error(tmp_path: Path) -> None:
    text = """version: 1
rules:
  - name: parses-the-event
    match: "time_diff(now.epoch, event.since) > duration('1d')"
    actions: [{drop: {}}]
  - name: next
    match: "`true`"
    actions: [{drop: {}}]
"""
    loaded = check_rules([str(rules_at(tmp_path, text))])
    assert loaded.ruleset is not None
    env = Envelope({"since": "yesterday"}, "a@x", "a@x/r", Stanza("message", "chat"), "b@x",
                   TUESDAY_10_PARIS)
    d = evaluate(loaded.ruleset, env)
    assert d.matched == ("next",)
    assert d.errors[0].rule == "parses-the-event"
    assert "not an ISO 8601 instant" in d.errors[0].message


def test_validate_locates_every_time_mistake_in_one_run(tmp_path: Path) -> None:
    text = """version: 1
intervals:
  office: {weekdays: mon-fri, tz: Europe/Parsi}
  weekend: {weekdays: sat-sun, times: "9-17"}
rules:
  - name: a
    match: "within('ofice') && duration('7x') > `1` && weekday(now.epoch, 'Mars/Base') == 'mon'"
    actions: [{drop: {}}]
  - name: b
    match: "to_epoch('2026-12-01T09:00') > `0` && within_at('weekend', now.epoch)"
    actions: [{drop: {}}]
"""
    loaded = check_rules([str(rules_at(tmp_path, text))])
    assert loaded.ruleset is None
    shown = [i.format() for i in loaded.issues]
    expected = [
        ":3:35: intervals.office.tz: interval 'office': unknown time zone 'Europe/Parsi'",
        ":4:39: intervals.weekend.times: interval 'weekend': times: '9-17' is not a range",
        "rules[0].match: unknown interval 'ofice', did you mean 'office'?",  # broken, still known
        "rules[0].match: duration: not a duration: '7x'",
        "rules[0].match: weekday: unknown time zone 'Mars/Base'",
        "rules[1].match: to_epoch: instant without a UTC offset: '2026-12-01T09:00'",
    ]
    for want in expected:
        assert any(want in line for line in shown), (want, shown)
    assert not any("unknown interval 'weekend'" in line for line in shown)  # reported once


def test_an_interval_nothing_uses_is_a_warning(tmp_path: Path) -> None:
    text = """version: 1
intervals:
  office: {weekdays: mon-fri}
  spare: {weekdays: sun}
rules:
  - name: a
    match: "within('office')"
    actions: [{drop: {}}]
"""
    loaded = check_rules([str(rules_at(tmp_path, text))])
    assert loaded.ruleset is not None
    warnings = [i for i in loaded.issues if i.severity == "warning"]
    assert [(i.line, i.message.split(" (")[0]) for i in warnings] == [
        (4, "interval 'spare' is never used")]


TESTS = """version: 1
rules: rules.yaml
defaults: {now: "2026-12-01T08:30:00+01:00"}
cases:
  - name: before opening
    event: {type: x}
    expect: {matched: [closed]}
  - name: half an hour later
    advance: 30m
    event: {type: x}
    expect:
      matched: [open]
      actions: [{type: reply, payload_contains: {at: "2026-12-01T08:00:00Z"}}]
  - name: a case may set the clock
    now: 1796374800  # 2026-12-04T09:00:00Z, a Friday, 10:00 in Paris
    event: {type: x}
    expect: {matched: [open]}
  - name: and the next one moves on from there
    advance: 1d
    event: {type: x}
    expect: {matched: [closed]}
"""


def test_rule_tests_run_on_a_frozen_steppable_clock(tmp_path: Path) -> None:
    rules_at(tmp_path, RULES)
    test, issues = parse_test_file(TESTS, str(tmp_path / "t.test.yaml"))
    assert test is not None, [i.format() for i in issues]
    loaded = check_rules([str(tmp_path / "rules.yaml")])
    assert loaded.ruleset is not None
    result = run_file(test, loaded.ruleset, clock=lambda: pytest.fail("the file sets now"))
    assert [c.passed for c in result.cases] == [True, True, True, True], \
        [c.failures for c in result.cases]


def test_a_file_without_now_starts_at_the_given_clock(tmp_path: Path) -> None:
    rules_at(tmp_path, RULES)
    text = TESTS.replace('defaults: {now: "2026-12-01T08:30:00+01:00"}\n', "")
    test, _ = parse_test_file(text, str(tmp_path / "t.test.yaml"))
    assert test is not None
    loaded = check_rules([str(tmp_path / "rules.yaml")])
    assert loaded.ruleset is not None
    result = run_file(test, loaded.ruleset, clock=lambda: TUESDAY_10_PARIS - 5400)
    assert [c.passed for c in result.cases] == [True, True, True, True]
    late = run_file(test, loaded.ruleset, clock=lambda: TUESDAY_10_PARIS)
    assert not late.cases[0].passed  # 10:00: already open


@pytest.mark.parametrize(("case", "message"), [
    ("now: yesterday", "not an ISO 8601 instant"),
    ("advance: soon", "not a duration"),
    ("now: 0\n    advance: 1m", "give now or advance, not both"),
])
def test_bad_clock_settings_in_a_test_file_are_located(case: str, message: str) -> None:
    text = f"""version: 1
rules: rules.yaml
cases:
  - name: c
    {case}
    event: {{type: x}}
    expect: {{matched: [open]}}
"""
    test, issues = parse_test_file(text, "t.test.yaml")
    assert test is None
    assert any(message in i.message and i.line >= 5 for i in issues), \
        [i.format() for i in issues]


RELATE = """version: 1
rules:
  - name: mute
    match: "event.type == 'mute'"
    actions:
      - relate: {object: event.to, kind: muted, ttl: 1h}
  - name: mute-for
    match: "event.type == 'mute-for'"
    actions:
      - relate: {object: event.to, kind: muted, ttl: event.for}
  - name: mute-until
    match: "event.type == 'mute-until'"
    actions:
      - relate: {object: event.to, kind: muted, until: event.until}
  - name: forever
    match: "event.type == 'forever'"
    actions:
      - relate: {object: event.to, kind: muted}
"""


def relate(tmp_path: Path, event: dict[str, object], now: float | None = TUESDAY_10_PARIS
           ) -> tuple[object, tuple[object, ...]]:
    loaded = check_rules([str(rules_at(tmp_path, RELATE))])
    assert loaded.ruleset is not None, [i.format() for i in loaded.issues]
    d = evaluate(loaded.ruleset, Envelope(event, "a@x", "a@x/r", Stanza("message", "chat"),
                                          "bot@x", now))
    expires = getattr(d.actions[0], "expires", "no relate")
    return expires, d.errors


@pytest.mark.parametrize(("event", "expires"), [
    ({"type": "mute", "to": "b@x"}, TUESDAY_10_PARIS + 3600),
    ({"type": "mute-for", "to": "b@x", "for": "90s"}, TUESDAY_10_PARIS + 90),
    ({"type": "mute-for", "to": "b@x", "for": 30}, TUESDAY_10_PARIS + 30),
    ({"type": "mute-until", "to": "b@x", "until": "2026-12-24T00:00:00Z"},
     to_epoch("2026-12-24T00:00:00Z")),
    ({"type": "forever", "to": "b@x"}, None),
])
def test_relate_computes_its_expiry_from_the_event_clock(
        tmp_path: Path, event: dict[str, object], expires: float | None) -> None:
    assert relate(tmp_path, event) == (expires, ())


@pytest.mark.parametrize(("event", "now", "message"), [
    ({"type": "mute-for", "to": "b@x", "for": "soon"}, TUESDAY_10_PARIS,
     "relate: ttl: not a duration: 'soon'"),
    ({"type": "mute-for", "to": "b@x", "for": 0}, TUESDAY_10_PARIS,
     "relate: ttl must be positive"),
    ({"type": "mute-until", "to": "b@x", "until": "tomorrow"}, TUESDAY_10_PARIS,
     "relate: until: not an ISO 8601 instant"),
    ({"type": "mute", "to": "b@x"}, None, "relate: ttl needs the clock"),
])
def test_a_bad_expiry_at_run_time_is_the_rule_s_error(
        tmp_path: Path, event: dict[str, object], now: float | None, message: str) -> None:
    _, errors = relate(tmp_path, event, now)
    assert len(errors) == 1
    assert message in getattr(errors[0], "message", "")


def test_validate_locates_bad_literal_expiries(tmp_path: Path) -> None:
    text = """version: 1
rules:
  - name: a
    match: "`true`"
    actions:
      - relate: {object: event.to, kind: muted, ttl: 0s}
      - relate: {object: event.to, kind: muted, ttl: {value: 7x}}
      - relate: {object: event.to, kind: muted, until: {value: "2026-12-24"}}
      - relate: {object: event.to, kind: muted, ttl: 1h, until: "2026-12-24T00:00:00Z"}
      - relate: {object: event.to, kind: muted, ttl: "event.x +"}
"""
    loaded = check_rules([str(rules_at(tmp_path, text))])
    assert loaded.ruleset is None
    shown = [f"{i.line}:{i.path}: {i.message}" for i in loaded.issues]
    for want in ["6:rules[0].actions[0].relate.ttl: must be more than zero",
                 "7:rules[0].actions[1].relate.ttl.value: not a duration: '7x'",
                 "8:rules[0].actions[2].relate.until.value: instant without a UTC offset",
                 "9:rules[0].actions[3].relate.until: give ttl or until, not both",
                 "10:rules[0].actions[4].relate.ttl: invalid JMESPath expression"]:
        assert any(line.startswith(want) for line in shown), (want, shown)
