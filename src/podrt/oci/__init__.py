"""The OCI runtime and its monitor: runc/crun commands (runtime.py), conmon (conmon.py,
exitfile.py), exec'd processes and attach sockets, the base OCI spec, image reference
grammar. Stands on host/; knows nothing of pods or containers as podrt keeps them."""
