"""`rulebot test` as a library: rule test files, run as the daemon would."""
