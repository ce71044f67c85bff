"""The rule language: rule files -> a compiled RuleSet."""
