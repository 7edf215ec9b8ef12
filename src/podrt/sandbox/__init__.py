"""The pod sandbox manager: one module per RPC group (run, claims, lifecycle, status,
recovery) wired by manager.py; the request checks, the infra spec, names and IDs."""
