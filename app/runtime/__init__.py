"""Embedded services for a local install: a Redis server and a capture SMTP server."""
