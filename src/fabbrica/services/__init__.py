"""Use cases. Each takes a session and the acting user; no HTTP, no printing."""
