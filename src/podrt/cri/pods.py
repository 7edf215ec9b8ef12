"""RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox,
UpdatePodSandboxResources."""

from __future__ import annotations

from podrt.api.runtime import v1 as cri
from podrt.cri import container_convert as cconv
from podrt.cri import sandbox_convert as conv
from podrt.cri.listcache import whole
from podrt.cri.rpcgroup import RpcGroup
from podrt.sandbox.manager import SandboxView


class PodRpcs(RpcGroup):
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
        if req.verbose:
            return await self._pod_status_cache.verbose(view, self._pod_info)
        return self._pod_status_cache.response(view, {})

    async def _pod_info(self, view: SandboxView) -> dict[str, object]:
        return {**await self._sandboxes.inspect(view), **cconv.pod_resources_info(view.state)}

    async def list_pod_sandbox(self, list_pod_sandbox_request: cri.ListPodSandboxRequest) -> cri.ListPodSandboxResponse:
        return whole(cri.ListPodSandboxResponse, self._pod_list.entries(list_pod_sandbox_request.filter))

    async def update_pod_sandbox_resources(self, update_pod_sandbox_resources_request: cri.UpdatePodSandboxResourcesRequest
                                           ) -> cri.UpdatePodSandboxResourcesResponse:
        req = update_pod_sandbox_resources_request
        await self._sandboxes.resources.update(req.pod_sandbox_id, *cconv.pod_resources(req))
        return cri.UpdatePodSandboxResourcesResponse()
