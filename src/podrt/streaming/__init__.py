"""The streaming server's parts (Exec, Attach, PortForward): wire protocols first."""
