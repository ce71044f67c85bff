"""`python -m rulebot` is the `rulebot` command."""

from rulebot.cli import main

main()
