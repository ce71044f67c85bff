"""rulebot: business logic on top of an XMPP server, written as data.

The package is layered; each module's docstring says what it may import.
Data flows one way: stanza (xmpp) -> envelope (wire) -> decision (engine,
pure) -> sends (xmpp).
"""

__version__ = "0.1.0"
