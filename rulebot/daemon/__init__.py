"""`rulebot run`: the service and its operator surfaces."""
