"""`python -m rulebot` is the `rulebot` command."""

from rulebot.cli.main import main

main()
