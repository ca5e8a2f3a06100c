"""Integrations: outbound webhook endpoints, their delivery log and secrets (admins only)."""
