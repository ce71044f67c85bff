"""rulebot: business logic on top of an XMPP server, written as data.

The package is layered by job (README "Development"); the layers are
import-linter contracts in pyproject.toml, checked by `make lint`. Data flows
one way: stanza (xmpp) -> values (bot) -> decision (engine, pure) -> sends (xmpp).
"""

__version__ = "0.1.0"
