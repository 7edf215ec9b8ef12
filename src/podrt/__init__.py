"""podrt: a Kubernetes CRI runtime daemon on asyncio."""

__version__ = "0.1.0"
