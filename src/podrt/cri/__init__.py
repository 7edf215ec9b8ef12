"""The edge: CRI v1 gRPC services. Converts CRI messages to podrt's model/ and back, calls
the managers (sandbox/, container/, images/, node/), and maps domain errors to gRPC
statuses (errors.py) under one hook per call (hooks.py: metrics, logging). RuntimeService
is one grpclib servicer composed of a mixin per RPC group (pods, containers, events,
streams, stats, runtime_info)."""
