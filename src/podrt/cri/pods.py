"""RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox."""

from __future__ import annotations

from podrt.api.runtime import v1 as cri
from podrt.cri import sandbox_convert as conv
from podrt.cri.listcache import ListCache
from podrt.cri.rpcgroup import RpcGroup, labels_match
from podrt.sandbox.manager import SandboxView


class PodRpcs(RpcGroup):
    _pod_list: ListCache[SandboxView]

    def _init_pods(self) -> None:
        self._pod_list = ListCache(cri.ListPodSandboxResponse, conv.pod_sandbox,
                                   key=lambda v: (v.state.id, v.ready))  # listed fields change only with readiness

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
        return self._pod_list.response(self._sandboxes.list(match, ids), full=unfiltered)
