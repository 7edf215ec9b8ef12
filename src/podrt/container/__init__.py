"""Containers in pods: the model, the CreateContainer transaction's context,
the persisted state, the OCI spec and the manager (create, start, stop,
remove, status, list)."""
