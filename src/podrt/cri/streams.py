"""Exec, Attach, PortForward: each answers with a URL of the streaming server,
where the client then streams (podrt/streaming/)."""

from __future__ import annotations

from podrt.api.runtime import v1 as cri
from podrt.cri.rpcgroup import RpcGroup
from podrt.errors import InvalidArgument
from podrt.streaming.server import AttachRequest, ExecRequest, PortForwardRequest


def _check_stdio(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> None:
    """The kubelet streaming server's rules for Exec and Attach."""
    if tty and stderr:
        raise InvalidArgument("tty and stderr cannot both be true: a TTY has one output")
    if not (stdin or stdout or stderr):
        raise InvalidArgument("one of stdin, stdout, or stderr must be set")


class StreamRpcs(RpcGroup):
    async def exec(self, exec_request: cri.ExecRequest) -> cri.ExecResponse:
        req = exec_request
        if not req.cmd:
            raise InvalidArgument("Exec needs a command")
        _check_stdio(req.stdin, req.stdout, req.stderr, req.tty)
        container_id = self._containers.stream_target(req.container_id)
        return cri.ExecResponse(url=self._streams.url(
            ExecRequest(container_id, tuple(req.cmd), req.tty, req.stdin, req.stdout, req.stderr)))

    async def attach(self, attach_request: cri.AttachRequest) -> cri.AttachResponse:
        req = attach_request
        _check_stdio(req.stdin, req.stdout, req.stderr, req.tty)
        container_id = self._containers.stream_target(req.container_id, stdin=req.stdin, tty=req.tty)
        return cri.AttachResponse(url=self._streams.url(
            AttachRequest(container_id, req.tty, req.stdin, req.stdout, req.stderr)))

    async def port_forward(self, port_forward_request: cri.PortForwardRequest) -> cri.PortForwardResponse:
        req = port_forward_request
        if bad := [p for p in req.port if not 0 < p < 65536]:
            raise InvalidArgument(f"port {bad[0]} is not between 1 and 65535")
        sandbox_id, netns = self._sandboxes.forward_netns(req.pod_sandbox_id)
        return cri.PortForwardResponse(url=self._streams.url(PortForwardRequest(sandbox_id, netns)))
