"""The phases of podrt's transactions, one module each; every step has a paired undo.

`sandbox/` holds RunPodSandbox's own phases, `container/` CreateContainer's;
the modules here are the phases both run (name reservation, the ID index,
the rootfs). One teardown path for rollback, stop, remove and crash recovery:
a step's undo needs only its recorded data and the daemon's services.

A transaction's context and deps live here too (`context.py` and each kind's
`context.py`): the managers build them and hand down what is theirs (the spec
builders, as deps.build_spec). steps/ imports nothing from sandbox/ or
container/ (tests/unit/test_layering.py).
"""
