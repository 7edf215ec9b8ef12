"""The system floor: everything that talks to the kernel (syscalls, mounts, /proc,
cgroups, overlay, inotify). Imports nothing from podrt but errors and aio."""
