"""Command-line interface: `degrade` and `sr` click groups. Only this package prints."""
