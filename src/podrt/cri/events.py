"""GetContainerEvents: the stream of container events the kubelet's evented PLEG reads."""

from __future__ import annotations

from podrt.api.runtime import v1 as cri
from podrt.container.events import ContainerEvent, EventType
from podrt.container.manager import ContainerView
from podrt.cri import container_convert as cconv
from podrt.cri import sandbox_convert as conv
from podrt.cri.fields import or_unset
from podrt.cri.rpcgroup import RpcGroup
from podrt.errors import NotFound
from podrt.rpc.call import Stream


class EventRpcs(RpcGroup):
    _statuses: dict[str, tuple[tuple[object, ...], cri.ContainerStatus]]

    def _init_events(self) -> None:
        self._statuses = {}
        self._containers.events.render = self._event_message

    async def _container_events(self, stream: Stream) -> None:
        """Every container event from now until the client leaves or podrt
        stops. Headers go out once subscribed: a client that has them misses nothing later.
        (RuntimeService.__mapping__ routes GetContainerEvents here, with the stream in hand.)"""
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
            cached = self._statuses[s.id] = (key, cconv.container_status(view))
        return cached[1]

    def _event_message(self, event: ContainerEvent) -> cri.ContainerEventResponse:
        """The pod's status and its containers' at the moment of the event, as the kubelet's evented PLEG reads them."""
        try:
            pod_status = conv.pod_sandbox_status(self._sandboxes.view(event.sandbox_id))
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
            created_at=event.at, pod_sandbox_status=or_unset(pod_status), containers_statuses=statuses)
