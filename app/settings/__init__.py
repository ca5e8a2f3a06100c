"""Settings area (admins only): sending settings, SMTP providers, email types."""
