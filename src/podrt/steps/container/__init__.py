"""CreateContainer's own phases (the shared ones are one level up)."""
