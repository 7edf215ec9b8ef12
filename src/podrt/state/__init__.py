"""In-memory registries rebuilt from disk at start, and on-disk records."""
