"""The phases of podrt's transactions, one module each; every step has a paired undo.

`sandbox/` holds RunPodSandbox's own phases, `container/` CreateContainer's;
the modules here are the phases both run (name reservation, the ID index,
the rootfs). One teardown path for rollback, stop, remove and crash recovery:
a step's undo needs only its recorded data and the daemon's services.
"""
