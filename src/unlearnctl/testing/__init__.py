"""Helpers for testing unlearnctl and its plugins: tiny real objects and contract checks."""
