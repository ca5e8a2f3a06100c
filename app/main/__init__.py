"""The home page and shared view helpers."""
