"""The image manager and what it stands on: the content-addressed blob and image store,
registries.conf lookup (registries/), the registry client and pull, docker/OCI archive
import (archive/), layer unpacking (unpack/), and the built-in pause image."""
