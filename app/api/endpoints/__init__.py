"""API endpoint modules: each module here is imported when the API blueprint is registered."""
