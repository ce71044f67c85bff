"""What the bot's connection and the client library share: TLS and SASL
settings of a client stream, and the reconnect backoff.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any


def backoff_delay(attempt: int, initial: float, cap: float, rand: Callable[[], float]) -> float:
    """Delay before retry number `attempt` (1-based): exponential, capped, with
    "equal jitter" (half fixed, half random) so that many bots restarted by one
    server outage do not reconnect in lockstep."""
    base = min(cap, initial * (2 ** (attempt - 1)))
    return float(base / 2 + rand() * base / 2)


def setup_tls(x: Any, ca_file: str | None, verify: bool, allow_plain: bool,
              direct_tls: bool = False) -> None:
    """TLS and SASL settings of a client stream, shared by the bot and the client library.

    Verification is on unless asked otherwise; without allow_plain, SASL refuses
    to send credentials over an unencrypted stream."""
    x.enable_direct_tls = direct_tls
    x.enable_starttls = True
    x.enable_plaintext = allow_plain
    if ca_file:
        x.ca_certs = ca_file
    if not verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        x.ssl_context = ctx
    mech = x.plugin["feature_mechanisms"]
    mech.unencrypted_plain = False
    mech.unencrypted_scram = allow_plain
