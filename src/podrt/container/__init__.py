"""The container manager: one module per RPC group (create, lifecycle, streams, status,
exits, stats, recovery, events) wired by manager.py; the request checks and the OCI spec."""
