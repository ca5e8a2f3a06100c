"""Command-line tools for responses (the `simulate` command)."""
