"""The package's layering, as users of its parts see it: what importing one part
loads. (The import graph itself is checked by import-linter in `make lint`.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ["yaml", "jsonschema", "jmespath", "rulebot.engine", "rulebot.rules", "rulebot.bot",
         "rulebot.load", "rulebot.config", "rulebot.store", "rulebot.daemon"]


def loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded after `statement`."""
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    return set(json.loads(out.stdout))


def test_importing_the_client_loads_no_rule_language() -> None:
    modules = loaded_after("import rulebot.client")
    assert "rulebot.client" in modules  # the probe sees imports at all
    assert "slixmpp" in modules
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [], f"import rulebot.client loads {heavy}"


@pytest.mark.parametrize("module", ["rulebot.engine.evaluate", "rulebot.bot.dispatch"])
def test_the_pure_core_loads_no_xmpp_no_store_no_yaml(module: str) -> None:
    modules = loaded_after(f"import {module}")
    for name in ("slixmpp", "yaml", "rulebot.store", "rulebot.xmpp", "rulebot.daemon",
                 "rulebot.logs", "sqlite3", "psycopg"):
        assert name not in modules, f"import {module} loads {name}"
