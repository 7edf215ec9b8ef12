"""What this node offers: the runtime's status and version, and `podrt check`."""
