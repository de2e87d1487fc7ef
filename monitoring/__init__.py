"""Metric definitions and exporters; dashboards and alert rules live beside them."""
