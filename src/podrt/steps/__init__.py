"""RunPodSandbox's phases, one module each; every step has a paired undo.

`STOP_PHASE` steps are also what StopPodSandbox undoes (infra, CNI, netns,
shm); RemovePodSandbox undoes the rest. One teardown path for rollback, stop,
remove and crash recovery.
"""
