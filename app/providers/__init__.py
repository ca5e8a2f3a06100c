"""Outgoing mail transports: any SMTP relay, and the local capture server as the default."""
