"""Pod sandboxes: the request model, the manager, persisted state."""
