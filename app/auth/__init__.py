"""Staff login, logout and user administration."""
