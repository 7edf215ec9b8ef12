"""RuntimeService: CRI messages <-> podrt managers. No business logic here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import grpclib.const
import grpclib.server

from podrt.api.runtime import v1 as cri
from podrt.container.events import ContainerEvent, EventType
from podrt.container.manager import ContainerManager, ContainerView
from podrt.cri import container_convert as cconv
from podrt.cri import sandbox_convert as conv
from podrt.cri import stats_convert as sconv
from podrt.cri.listcache import ListCache
from podrt.errors import InvalidArgument, NotFound
from podrt.node.status import RuntimeStatusManager
from podrt.sandbox.manager import SandboxManager, SandboxView
from podrt.streaming.server import AttachRequest, ExecRequest, PortForwardRequest, StreamServer

_CGROUP_DRIVERS = {"systemd": cri.CgroupDriver.SYSTEMD, "cgroupfs": cri.CgroupDriver.CGROUPFS}


def labels_match(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """A CRI filter's label_selector: every pair present (an empty selector matches all)."""
    return all(labels.get(k) == v for k, v in selector.items())


def _check_stdio(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> None:
    """The kubelet streaming server's rules for Exec and Attach."""
    if tty and stderr:
        raise InvalidArgument("tty and stderr cannot both be true: a TTY has one output")
    if not (stdin or stdout or stderr):
        raise InvalidArgument("one of stdin, stdout, or stderr must be set")


class RuntimeService(cri.RuntimeServiceBase):
    """Every RPC not overridden here answers UNIMPLEMENTED (the generated base)."""

    def __init__(self, status: RuntimeStatusManager, sandboxes: SandboxManager, containers: ContainerManager,
                 streams: StreamServer) -> None:
        self._status = status
        self._streams = streams
        self._sandboxes = sandboxes
        self._containers = containers
        self._list_cache = ListCache(cri.ListPodSandboxResponse, conv.pod_sandbox,
                                     key=lambda v: (v.state.id, v.ready))  # listed fields change only with readiness
        self._container_cache = ListCache(cri.ListContainersResponse, cconv.container,
                                          key=lambda v: (v.state.id, v.status))  # listed fields change only with it
        containers.events.render = self._event_message
        self._statuses: dict[str, tuple[tuple[object, ...], cri.ContainerStatus]] = {}

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        """GetContainerEvents gets a handler with the stream in hand (the
        generated one hides it), to send headers once the subscription is in place."""
        mapping = super().__mapping__()
        mapping["/runtime.v1.RuntimeService/GetContainerEvents"] = grpclib.const.Handler(
            self._container_events, grpclib.const.Cardinality.UNARY_STREAM,
            cri.GetEventsRequest, cri.ContainerEventResponse)
        return mapping

    async def _container_events(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        """Every container event from now until the client leaves or podrt
        stops. Headers go out once subscribed: a client that has them misses nothing later."""
        await stream.recv_message()
        with self._containers.events.subscribe() as sub:
            await stream.send_initial_metadata()
            async for message in sub.items():
                await stream.send_message(message)

    def _container_status(self, view: ContainerView) -> cri.ContainerStatus:
        """Built again only when something it shows changed: a betterproto
        ContainerStatus costs ~0.6 ms, and every event carries the statuses of all the pod's containers."""
        s = view.state
        key = (view.status, s.started_at, s.finished_at, s.exit_code, s.reason, s.message, s.user, s.config)
        cached = self._statuses.get(s.id)
        if cached is None or cached[0] != key:
            cached = self._statuses[s.id] = (key, cconv.container_status(view, None).status)
        return cached[1]

    def _event_message(self, event: ContainerEvent) -> cri.ContainerEventResponse:
        """The pod's status and its containers' at the moment of the event, as the kubelet's evented PLEG reads them."""
        try:
            pod_status = conv.pod_sandbox_status(self._sandboxes.view(event.sandbox_id), None).status
        except NotFound:  # the pod went first (restart cleanup)
            pod_status = None
        if event.type == EventType.DELETED:
            self._statuses.pop(event.container_id, None)
        if len(self._statuses) > 2 * len(self._containers) + 64:  # deleted while nobody listened
            self._statuses = {i: v for i, v in self._statuses.items() if self._containers.known(i)}
        statuses = [self._container_status(v)
                    for v in self._containers.list(lambda v: v.state.sandbox_id == event.sandbox_id)]
        return cri.ContainerEventResponse(
            container_id=event.container_id, container_event_type=cri.ContainerEventType(event.type.value),
            created_at=event.at, pod_sandbox_status=pod_status, containers_statuses=statuses)

    async def run_pod_sandbox(self, run_pod_sandbox_request: cri.RunPodSandboxRequest) -> cri.RunPodSandboxResponse:
        sandbox_id = await self._sandboxes.run(conv.sandbox_config(run_pod_sandbox_request))
        return cri.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    async def stop_pod_sandbox(self, stop_pod_sandbox_request: cri.StopPodSandboxRequest) -> cri.StopPodSandboxResponse:
        await self._sandboxes.stop(stop_pod_sandbox_request.pod_sandbox_id)
        return cri.StopPodSandboxResponse()

    async def remove_pod_sandbox(self, remove_pod_sandbox_request: cri.RemovePodSandboxRequest) -> cri.RemovePodSandboxResponse:
        await self._sandboxes.remove(remove_pod_sandbox_request.pod_sandbox_id)
        return cri.RemovePodSandboxResponse()

    async def pod_sandbox_status(self, pod_sandbox_status_request: cri.PodSandboxStatusRequest) -> cri.PodSandboxStatusResponse:
        req = pod_sandbox_status_request
        view = self._sandboxes.view(self._sandboxes.resolve(req.pod_sandbox_id))
        info = await self._sandboxes.inspect(view) if req.verbose else None
        return conv.pod_sandbox_status(view, info)

    async def list_pod_sandbox(self, list_pod_sandbox_request: cri.ListPodSandboxRequest) -> cri.ListPodSandboxResponse:
        f = list_pod_sandbox_request.filter
        ids = self._sandboxes.matching_ids(f.id) if f.id else None
        want_state = f.state.state if f.is_set("state") else None
        selector = dict(f.label_selector)

        def match(view: SandboxView) -> bool:
            if want_state is not None and (want_state == cri.PodSandboxState.SANDBOX_READY) != view.ready:
                return False
            labels = view.state.config.labels
            return labels_match(labels, selector)

        unfiltered = ids is None and want_state is None and not selector
        return self._list_cache.response(self._sandboxes.list(match, ids), full=unfiltered)

    async def create_container(self, create_container_request: cri.CreateContainerRequest) -> cri.CreateContainerResponse:
        req = create_container_request
        container_id = await self._containers.create(req.pod_sandbox_id, cconv.container_config(req))
        return cri.CreateContainerResponse(container_id=container_id)

    async def start_container(self, start_container_request: cri.StartContainerRequest) -> cri.StartContainerResponse:
        await self._containers.start(start_container_request.container_id)
        return cri.StartContainerResponse()

    async def stop_container(self, stop_container_request: cri.StopContainerRequest) -> cri.StopContainerResponse:
        req = stop_container_request
        await self._containers.stop(req.container_id, float(max(req.timeout, 0)))
        return cri.StopContainerResponse()

    async def remove_container(self, remove_container_request: cri.RemoveContainerRequest) -> cri.RemoveContainerResponse:
        await self._containers.remove(remove_container_request.container_id)
        return cri.RemoveContainerResponse()

    async def container_status(self, container_status_request: cri.ContainerStatusRequest) -> cri.ContainerStatusResponse:
        req = container_status_request
        view = self._containers.view(self._containers.resolve(req.container_id))
        info = await self._containers.inspect(view) if req.verbose else None
        return cconv.container_status(view, info)

    async def exec_sync(self, exec_sync_request: cri.ExecSyncRequest) -> cri.ExecSyncResponse:
        req = exec_sync_request
        code, out, err = await self._containers.exec_sync(req.container_id, tuple(req.cmd), float(max(req.timeout, 0)))
        return cri.ExecSyncResponse(stdout=out, stderr=err, exit_code=code)

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

    async def update_container_resources(self, update_container_resources_request: cri.UpdateContainerResourcesRequest
                                         ) -> cri.UpdateContainerResourcesResponse:
        req = update_container_resources_request
        await self._containers.update_resources(req.container_id, cconv.resources("linux", req.linux))
        return cri.UpdateContainerResourcesResponse()

    async def reopen_container_log(self, reopen_container_log_request: cri.ReopenContainerLogRequest
                                   ) -> cri.ReopenContainerLogResponse:
        await self._containers.reopen_log(reopen_container_log_request.container_id)
        return cri.ReopenContainerLogResponse()

    async def list_containers(self, list_containers_request: cri.ListContainersRequest) -> cri.ListContainersResponse:
        f = list_containers_request.filter
        ids = self._containers.matching_ids(f.id) if f.id else None
        want_state = f.state.state if f.is_set("state") else None
        selector = dict(f.label_selector)
        pod = f.pod_sandbox_id

        def match(view: ContainerView) -> bool:
            if want_state is not None and cconv.STATE[view.status] != want_state:
                return False
            if pod and not view.state.sandbox_id.startswith(pod):
                return False
            labels = view.state.config.labels
            return labels_match(labels, selector)

        unfiltered = ids is None and want_state is None and not selector and not pod
        return self._container_cache.response(self._containers.list(match, ids), full=unfiltered)

    async def container_stats(self, container_stats_request: cri.ContainerStatsRequest) -> cri.ContainerStatsResponse:
        view = self._containers.view(self._containers.resolve(container_stats_request.container_id))
        return cri.ContainerStatsResponse(stats=(await self._container_stats([view]))[0])

    async def list_container_stats(self, list_container_stats_request: cri.ListContainerStatsRequest
                                   ) -> cri.ListContainerStatsResponse:
        f = list_container_stats_request.filter
        ids = self._containers.matching_ids(f.id) if f.id else None
        selector, pod = dict(f.label_selector), f.pod_sandbox_id

        def match(view: ContainerView) -> bool:
            labels = view.state.config.labels
            return view.state.sandbox_id.startswith(pod) and labels_match(labels, selector)

        return cri.ListContainerStatsResponse(stats=await self._container_stats(self._containers.list(match, ids)))

    async def _container_stats(self, views: list[ContainerView]) -> list[cri.ContainerStats]:
        root = self._containers.deps.root  # the writable layers' filesystem, as ImageFsInfo names it
        return [sconv.container_stats(v, sample, root) for v, sample in await self._containers.stats(views)]

    async def pod_sandbox_stats(self, pod_sandbox_stats_request: cri.PodSandboxStatsRequest) -> cri.PodSandboxStatsResponse:
        view = self._sandboxes.view(self._sandboxes.resolve(pod_sandbox_stats_request.pod_sandbox_id))
        return cri.PodSandboxStatsResponse(stats=(await self._pod_stats([view]))[0])

    async def list_pod_sandbox_stats(self, list_pod_sandbox_stats_request: cri.ListPodSandboxStatsRequest
                                     ) -> cri.ListPodSandboxStatsResponse:
        f = list_pod_sandbox_stats_request.filter
        ids = self._sandboxes.matching_ids(f.id) if f.id else None
        selector = dict(f.label_selector)

        def match(view: SandboxView) -> bool:
            return labels_match(view.state.config.labels, selector)

        return cri.ListPodSandboxStatsResponse(stats=await self._pod_stats(self._sandboxes.list(match, ids)))

    async def _pod_stats(self, views: list[SandboxView]) -> list[cri.PodSandboxStats]:
        root = self._containers.deps.root
        return [sconv.pod_stats(pod, sample, [sconv.container_stats(v, s, root) for v, s in mine])
                for pod, sample, mine in await self._containers.pod_stats(views)]

    async def version(self, version_request: cri.VersionRequest) -> cri.VersionResponse:
        return cri.VersionResponse(**attrs.asdict(self._status.version()))

    async def status(self, status_request: cri.StatusRequest) -> cri.StatusResponse:
        conditions = [cri.RuntimeCondition(**attrs.asdict(c)) for c in self._status.conditions()]
        handlers = [
            cri.RuntimeHandler(name=name, features=cri.RuntimeHandlerFeatures())
            for name in self._status.config.runtime.runtimes
        ]
        return cri.StatusResponse(
            status=cri.RuntimeStatus(conditions=conditions),
            info=self._status.verbose_info() if status_request.verbose else {},
            runtime_handlers=handlers,
            features=cri.RuntimeFeatures(supplemental_groups_policy=True),  # Strict: container/spec.py resolve_user
        )

    async def runtime_config(self, runtime_config_request: cri.RuntimeConfigRequest) -> cri.RuntimeConfigResponse:
        driver = _CGROUP_DRIVERS[self._status.config.runtime.cgroup_manager]
        return cri.RuntimeConfigResponse(linux=cri.LinuxRuntimeConfiguration(cgroup_driver=driver))

    async def update_runtime_config(
        self, update_runtime_config_request: cri.UpdateRuntimeConfigRequest
    ) -> cri.UpdateRuntimeConfigResponse:
        config = update_runtime_config_request.runtime_config
        self._status.update_pod_cidr(config.network_config.pod_cidr if config else "")
        return cri.UpdateRuntimeConfigResponse()
