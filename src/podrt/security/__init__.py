"""Confinement a container runs under: seccomp profiles, AppArmor, SELinux labels."""
