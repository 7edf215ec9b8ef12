"""podrt's own server side of gRPC over HTTP/2 (RFC 9113), for the CRI socket.

grpclib's server is not used: measured on a bare Version RPC, it cost the
event loop ~1 ms of CPU per call, nearly all of it in grpclib's protocol
layer and h2's general-purpose state machine (hyperframe objects, header
validation, events; h2's receive_data alone ~0.57 ms a call, its two
send_headers ~0.33 ms), and the kubelet polls lists and statuses every
second. A gRPC server needs a small part of HTTP/2: requests that are one
message, answers that are a few header blocks and DATA frames, flow control,
PING, RST_STREAM and GOAWAY. That part is here, made for those calls: a unary
answer is three pre-encoded frames in one socket write.

grpclib stays for what fits: GRPCError and Status, the method table
betterproto generates (const.Handler, Cardinality), the protobuf codec, and
the client (tests, cli). hpack decodes request header blocks (its dynamic
table is the client's to fill); answers are encoded without it.

frames.py: frames, answers' header blocks, protocol errors; headers.py: a
request's header block; connection.py: one client connection (frames in,
flow control); call.py: one call's Stream, what a handler reads its request
from and writes its answer to.
"""
