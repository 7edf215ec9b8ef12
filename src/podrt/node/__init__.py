"""What the runtime reports about itself and its node: status and version (node/status),
Prometheus metrics (node/metrics), and `podrt check` (node/check)."""
