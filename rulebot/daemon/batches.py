"""The idempotency records as the store keeps them: one JSON text per batch
(BatchWriter), and back (decode_batch). rulebot.daemon.ledger decides what is
written when.
"""

from __future__ import annotations

import json
from typing import Any

from rulebot.bot.values import EventKey, Meta, Outbound, Recorded
from rulebot.jsonenc import encoder
from rulebot.wire.encode import encode_payload

_encode = encoder(separators=(",", ":"), allow_nan=False)


class BatchWriter:
    """Encodes a batch of records as the JSON text stored:

        [[version, message type, encoding], records, payloads]

    The head holds what the batch's first record has and most have (the rule
    set's version, the configured message type and encoding). A record is
    [sender, key, position, stanza id, matched rules, messages, rest]; a
    message is [to, payload number, id, rule], the rule as its place in the
    matched rules (-1: none); `rest` is {} unless the record differs from the
    head (version, type or encoding) or its meta sender differs from its
    key's sender. The event id is not written: the key holds it. Payloads are
    numbered in the batch; one shared by several messages (a broadcast) is
    written once.

    Few strings per record, because encoding them is most of the cost: one
    call of json's C encoder for the batch (half the cost of encoding the
    records one by one), and each payload is wire.encode_payload's text,
    which the daemon hands to the connection (`texts`, by the payload
    object's id()), so it is encoded once for the record and the stanza."""

    def __init__(self) -> None:
        self.head: tuple[str, str, str] | None = None
        self.records: list[tuple[Any, ...]] = []
        self.payloads: list[str] = []
        self.texts: dict[int, str] = {}

    def add(self, key: EventKey, position: int, recorded: Recorded) -> None:
        out = recorded.outbound
        matched = recorded.matched
        payloads, texts = self.payloads, self.texts
        rest: dict[str, Any] = {}
        if not out:
            rows: Any = ()
            if self.head is None:
                self.head = (recorded.version, "chat", "body")
            elif recorded.version != self.head[0]:
                rest["v"] = recorded.version
        else:
            first = out[0]
            meta = first.meta
            head = self.head
            if head is None:
                head = self.head = (recorded.version, first.type, first.encoding)
            if len(out) == 1:  # the usual case: a forward, a reply or an error
                texts[id(first.payload)] = text = encode_payload(first.payload)
                rows = ((first.to, len(payloads), first.id,
                         _rule_index(matched, meta.rule)),)
                payloads.append(text)
            else:
                rows = []
                index: dict[int, int] = {}  # a broadcast's recipients share one payload
                for o in out:
                    n = index.get(id(o.payload))
                    if n is None:
                        n = index[id(o.payload)] = len(payloads)
                        texts[id(o.payload)] = text = encode_payload(o.payload)
                        payloads.append(text)
                    row: tuple[Any, ...] = (o.to, n, o.id, _rule_index(matched, o.meta.rule))
                    if o.encoding != first.encoding or o.type != first.type:
                        row += (o.encoding, o.type)  # not from the dispatcher, which never does
                    rows.append(row)
            if recorded.version != head[0]:
                rest["v"] = recorded.version
            if first.type != head[1]:
                rest["t"] = first.type
            if first.encoding != head[2]:
                rest["e"] = first.encoding
            if meta.sender != key[0]:
                rest["s"] = meta.sender
            if meta.event_id != _event_id(key):
                rest["i"] = meta.event_id
        self.records.append((key[0], key[1], position,
                             out[0].meta.stanza_id if out else None, matched, rows, rest))

    def text(self) -> str:
        return (f"[{_encode(self.head or ('', 'chat', 'body'))},{_encode(self.records)},"
                f"[{','.join(self.payloads)}]]")


def _rule_index(matched: tuple[str, ...], rule: str | None) -> int | str:
    """A message's rule as its place among the matched rules, -1 for none; the
    name itself if it is not among them (it always is)."""
    if rule is None:
        return -1
    try:
        return matched.index(rule)
    except ValueError:
        return rule


def _rule_of(matched: list[str], r: int | str) -> str | None:
    if isinstance(r, str):
        return r
    return matched[r] if 0 <= r < len(matched) else None


def _event_id(key: EventKey) -> str | None:
    """The event id a key holds (None for a stanza-id key)."""
    k = key[1]
    return k[2:] if k[:2] in ("e:", "n:") else None


def encode(records: list[tuple[EventKey, int, Recorded]]) -> str:
    """A batch's JSON text (see BatchWriter)."""
    writer = BatchWriter()
    for key, position, recorded in records:
        writer.add(key, position, recorded)
    return writer.text()


def decode_batch(text: str) -> list[tuple[EventKey, int, Recorded]]:
    """The records of a batch's JSON text. Raises ValueError, KeyError, TypeError
    or IndexError on anything BatchWriter did not write."""
    head, records, payloads = json.loads(text)
    return [decode(head, entry, payloads) for entry in records]


def decode(head: list[Any], entry: list[Any], payloads: list[Any]
           ) -> tuple[EventKey, int, Recorded]:
    """One record of a parsed batch (see BatchWriter)."""
    sender, k, position, stanza_id, matched, rows, rest = entry
    key = EventKey(sender, k)
    version = rest.get("v", head[0])
    mtype, enc = rest.get("t", head[1]), rest.get("e", head[2])
    msender = rest.get("s", sender)
    eid = rest["i"] if "i" in rest else _event_id(key)
    out = tuple(Outbound(row[0], payloads[row[1]], row[4] if len(row) > 4 else enc,
                         row[5] if len(row) > 4 else mtype, row[2],
                         Meta(msender, _rule_of(matched, row[3]), version, eid, stanza_id))
                for row in rows)
    return key, int(position), Recorded(version, tuple(matched), out)
