"""Persistence: orders, plans, van state and an append-only event log."""
