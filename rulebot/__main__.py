"""`python -m rulebot` is the `rulebot` command."""

from rulebot.cli.main import main

if __name__ == "__main__":  # not when a child process (multiprocessing) imports it
    main()
