"""What the bot tells the operator when its connection fails for good: the
messages of the failures that retrying cannot fix (rulebot run exits 3 with
them), and the hints logged with those it retries. Plain text from the
config; rulebot.xmpp.connection decides when.
"""

from __future__ import annotations

from rulebot.config import Config

#: Stream errors no retry fixes: a wrong secret, component name or domain.
FATAL_STREAM_ERRORS = ("not-authorized", "host-unknown", "improper-addressing")

#: Prosody takes one connection per component and refuses another with
#: <conflict/> (a second worker, or a restart before it saw the old one go).
CONFLICT_HINT = ("another connection of this component is up: Prosody accepts one per "
                 "component (several workers need ejabberd), or the previous one has not "
                 "timed out yet; retrying")


def secret_source(c: Config) -> str:
    """Where the password or secret came from, for a message (never the value)."""
    return f"password_file {c.password_file}" if c.password_file else f"${c.password_env}"


def auth_failed(c: Config) -> str:
    return (f"authentication failed for {c.jid}: check the account and the password in "
            f"{secret_source(c)}")


def tls_failed(c: Config, error: object) -> str:
    return (f"TLS certificate of {c.host}:{c.port} could not be verified ({error}); set "
            "tls.ca_file to the CA that signed it")


def stream_refused(c: Config, condition: str) -> str | None:
    """The fatal message for a stream error, or None when it is worth retrying."""
    if condition not in FATAL_STREAM_ERRORS:
        return None
    return f"the server refused the stream: {condition}" + (
        f" (check the component secret in {secret_source(c)})"
        if c.mode == "component" else "")
