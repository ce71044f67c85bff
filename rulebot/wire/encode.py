"""Writing the wire format: payload text that is always valid XML 1.0 character
data, the structured error reply, and the namespaces both sides use.

No XMPP, no I/O, no logging. Reading is rulebot.wire.decode.
"""

from __future__ import annotations

import re

from rulebot.jsonenc import encoder
from rulebot.model import JSON

#: Where an event travels: "body" (the message <body>), "json" (an XEP-0335
#: container) or an XML event element's tag, "{namespace}local"
#: (rulebot.wire.xmlmap).
Encoding = str

#: The XEP-0335 JSON container namespace.
JSON_NS = "urn:xmpp:json:0"

#: XEP-0184 message delivery receipts: a client asks with <request/>, the bot
#: answers <received id=.../> once the event is acted on.
RECEIPTS_NS = "urn:xmpp:receipts"

#: The namespace of the bot's metadata element on routed messages
#: (<rulebot xmlns='urn:rulebot:0' sender rule version event/>).
META_NS = "urn:rulebot:0"

#: A character XML 1.0 cannot carry (what is left once tab, newline, carriage
#: return and the allowed ranges are taken out).
NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """`text` with every non-XML character spelled as a \\uXXXX escape."""
    return NOT_XML_CHAR.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


_ENCODE = encoder(separators=(",", ":"), allow_nan=False)


def encode_payload(payload: JSON) -> str:
    """Compact JSON text for a message body or XEP-0335 container.

    The result is always valid XML 1.0 character data: characters XML cannot
    carry (only possible if the payload did not come through decode_event)
    are written as JSON \\uXXXX escapes, which decode to the same string.
    Raises ValueError for NaN or infinite floats, TypeError for non-JSON values.
    """
    text = _ENCODE(payload)
    # json.dumps escapes U+0000-U+001F itself; only surrogates, U+FFFE and U+FFFF
    # can reach here raw, and only inside strings, where an escape means the same.
    if NOT_XML_CHAR.search(text) is None:
        return text
    return xml_safe(text)


def error_payload(
    code: str, message: str, path: str | None = None, event_id: JSON = None
) -> dict[str, JSON]:
    """The structured error reply: {"error": {"code", "message"[, "path"][, "id"]}}."""
    error: dict[str, JSON] = {"code": code, "message": message}
    if path is not None:
        error["path"] = path
    if event_id is not None:
        error["id"] = event_id
    return {"error": error}
