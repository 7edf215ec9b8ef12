"""podrt's own types of what CRI asks for (a pod's and a container's config, their
parts): plain attrs records that cri/ converts to and from and every layer below
reads. Imports nothing from podrt but security (the seccomp and SELinux kinds)."""
