"""CreateContainer, StartContainer, StopContainer, RemoveContainer, ContainerStatus,
ListContainers, UpdateContainerResources, ReopenContainerLog, ExecSync,
CheckpointContainer."""

from __future__ import annotations

import asyncio

from podrt.api.runtime import v1 as cri
from podrt.cri import container_convert as cconv
from podrt.cri.listcache import whole
from podrt.cri.rpcgroup import RpcGroup


class ContainerRpcs(RpcGroup):
    async def create_container(self, create_container_request: cri.CreateContainerRequest) -> cri.CreateContainerResponse:
        req = create_container_request
        container_id = await self._containers.create(req.pod_sandbox_id, cconv.container_config(req))
        return cri.CreateContainerResponse(container_id=container_id)

    async def start_container(self, start_container_request: cri.StartContainerRequest) -> cri.StartContainerResponse:
        container_id = self._containers.resolve(start_container_request.container_id)
        await self._containers.start(container_id)
        # its status is asked next (the kubelet's relist, critest's benchmark): encoded once this answer is sent
        asyncio.get_running_loop().call_soon(self._prepare_status, container_id)
        return cri.StartContainerResponse()

    def _prepare_status(self, container_id: str) -> None:
        if self._containers.known(container_id):  # not removed meanwhile
            self._container_status_cache.prepare(self._containers.view(container_id), self._containers.inspect)

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
        if req.verbose:
            return await self._container_status_cache.verbose(view, self._containers.inspect)
        return self._container_status_cache.response(view, {})

    async def list_containers(self, list_containers_request: cri.ListContainersRequest) -> cri.ListContainersResponse:
        return whole(cri.ListContainersResponse, self._container_list.entries(list_containers_request.filter))

    async def update_container_resources(self, update_container_resources_request: cri.UpdateContainerResourcesRequest
                                         ) -> cri.UpdateContainerResourcesResponse:
        req = update_container_resources_request
        await self._containers.update_resources(req.container_id, cconv.resources("linux", req.linux))
        return cri.UpdateContainerResourcesResponse()

    async def reopen_container_log(self, reopen_container_log_request: cri.ReopenContainerLogRequest
                                   ) -> cri.ReopenContainerLogResponse:
        await self._containers.reopen_log(reopen_container_log_request.container_id)
        return cri.ReopenContainerLogResponse()

    async def exec_sync(self, exec_sync_request: cri.ExecSyncRequest) -> cri.ExecSyncResponse:
        req = exec_sync_request
        code, out, err = await self._containers.exec_sync(req.container_id, tuple(req.cmd), float(max(req.timeout, 0)))
        return cri.ExecSyncResponse(stdout=out, stderr=err, exit_code=code)

    async def checkpoint_container(self, checkpoint_container_request: cri.CheckpointContainerRequest
                                   ) -> cri.CheckpointContainerResponse:
        req = checkpoint_container_request
        await self._containers.checkpoints.checkpoint(req.container_id, req.location, float(max(req.timeout, 0)))
        return cri.CheckpointContainerResponse()
