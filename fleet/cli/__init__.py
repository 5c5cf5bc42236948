"""The ``fleet`` command (typer + rich)."""
