"""Brokers: one async protocol (`brokers.base`), many venues (`brokers.paper`, ...)."""
