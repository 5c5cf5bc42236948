"""Turning a day's parcels into routes with PyVRP, and independently verifying them."""
