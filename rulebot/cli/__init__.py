"""The `rulebot` command: click only; signals, event loops and exits live here."""
