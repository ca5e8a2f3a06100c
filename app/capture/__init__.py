"""Captured mail: what the local capture SMTP server received, for staff to read."""
