"""Evaluation, pure: an event and a compiled RuleSet -> a Decision."""
