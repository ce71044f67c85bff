"""Operator YAML with positions, and the shipped JSON Schemas."""
