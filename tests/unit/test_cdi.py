"""CDI without a host: the name grammar, spec files (versions, YAML and JSON,
what refuses a file), the catalog of spec dirs (priority, conflicts, a bad
file beside good ones, a file changed in place), the edits on an OCI spec,
and the CRI side (CDI_devices and cdi.k8s.io/ annotations)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from podrt.api.runtime import v1 as cri
from podrt.config import Config, RuntimeConfig
from podrt.container.spec import build_container_spec
from podrt.cri import container_convert as cconv
from podrt.errors import FailedPrecondition, InvalidArgument
from podrt.model.container import ContainerConfig
from podrt.oci.cdi import edits, names, registry, specfile
from podrt.oci.cdi.specfile import Edits, HookEdit, MountEdit, NodeEdit, SpecError
from podrt.state.format import config_to_dict, container_config_from_dict
from tests.unit.test_container_spec import _ctx, _request

# ---- names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vendor.com/gpu=0", "a/b=c", "nvidia.com/gpu=all", "Vendor_1.x-y/cl.a-s_s=dev:0.1-a_b",
                                  "v/c=0abc"])
def test_valid_qualified_names(name: str) -> None:
    vendor, klass, device = names.parse_qualified(name)
    assert f"{vendor}/{klass}={device}" == name


@pytest.mark.parametrize("name, why", [
    ("gpu0", "not a fully qualified"), ("vendor.com/gpu", "not a fully qualified"), ("/dev/null", "not a fully qualified"),
    ("vendor.com=gpu0", "not <vendor>/<class>"), ("=x", "not a fully qualified"), ("v/c=", "not a fully qualified"),
    ("1vendor/c=d", "vendor '1vendor' must start with a letter"), ("v/c-=d", "class 'c-' must end with a letter or digit"),
    ("v/c/x=d", "class 'c/x' holds '/'"), ("v/c=d=e", "device name 'd=e' holds '='"), ("v/c=-d", "must start with a letter or digit"),
    ("v/c=d:", "must end with a letter or digit"), ("vxé/c=d", "must end with a letter or digit"), ("véx/c=d", "holds .é."), ("", "not a fully qualified"),
])
def test_invalid_qualified_names(name: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        names.parse_qualified(name)


def test_annotations_by_key_then_in_value_order() -> None:
    found = list(names.annotated({"cdi.k8s.io/z": "v/c=3", "other/x": "v/c=9", "cdi.k8s.io/a_dev": "v/c=1,v/c=2"}))
    assert found == [("cdi.k8s.io/a_dev", "v/c=1"), ("cdi.k8s.io/a_dev", "v/c=2"), ("cdi.k8s.io/z", "v/c=3")]


# ---- spec files ----------------------------------------------------------------------

YAML = """\
cdiVersion: "{version}"
kind: vendor.com/gpu
containerEdits:
  env: [SHARED=1]
devices:
  - name: gpu0
    containerEdits:
      env: ["GPU=0"]
      deviceNodes:
        - path: /dev/gpu0
          type: c
          major: 1
          minor: 3
          fileMode: 0640
          permissions: rw
      mounts:
        - hostPath: /usr/lib/gpu
          containerPath: /usr/lib/gpu
          options: [ro, nosuid, nodev, bind]
      hooks:
        - hookName: createContainer
          path: /usr/bin/gpu-hook
          args: [gpu-hook, update]
          timeout: 5
"""


def _spec(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"cdiVersion": "0.5.0", "kind": "vendor.com/gpu",
                           "devices": [{"name": "gpu0", "containerEdits": {"env": ["GPU=0"]}}]}
    doc.update(over)
    return doc


def _parse(doc: Any, path: str = "/etc/cdi/x.json") -> specfile.SpecFile:
    return specfile.parse(path, json.dumps(doc).encode())


@pytest.mark.parametrize("version", ["0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "v0.6.0"])
def test_each_version_podrt_reads_in_yaml(version: str) -> None:
    spec = specfile.parse("/etc/cdi/gpu.yaml", YAML.format(version=version).encode())
    assert (spec.vendor, spec.klass, spec.version) == ("vendor.com", "gpu", version.removeprefix("v"))
    assert spec.edits == Edits(env=("SHARED=1",))
    dev = spec.devices["gpu0"]
    assert dev.device_nodes == (NodeEdit("/dev/gpu0", type="c", major=1, minor=3, file_mode=0o640, permissions="rw"),)
    assert dev.mounts == (MountEdit("/usr/lib/gpu", "/usr/lib/gpu", ("ro", "nosuid", "nodev", "bind")),)
    assert dev.hooks == (HookEdit("createContainer", "/usr/bin/gpu-hook", ("gpu-hook", "update"), (), 5),)
    assert spec.qualified("gpu0") == "vendor.com/gpu=gpu0"


def test_json_is_read_as_json() -> None:
    spec = _parse(_spec(containerEdits={"additionalGids": [0, 44]}, cdiVersion="0.7.0"), "/etc/cdi/gpu.json")
    assert spec.edits.additional_gids == (0, 44) and spec.devices["gpu0"].env == ("GPU=0",)
    tabbed = json.dumps(_spec(), indent="\t").encode()  # tabs: fine for JSON, not for YAML's indentation
    assert specfile.parse("/etc/cdi/t.json", tabbed).devices


@pytest.mark.parametrize("doc, why", [
    (_spec(cdiVersion="0.2.0"), "cdiVersion '0.2.0' is not one podrt reads"),
    (_spec(cdiVersion="1.1.0"), "cdiVersion '1.1.0' is not one podrt reads"),
    (_spec(cdiVersion="0.5"), "cdiVersion '0.5' is not one podrt reads"),
    (_spec(cdiVersion=0.5), "spec.cdiVersion: must be a string, got float"),
    ({k: v for k, v in _spec().items() if k != "kind"}, "spec.kind: missing"),
    (_spec(kind="vendor.com"), "kind: 'vendor.com' is not <vendor>/<class>"),
    (_spec(devices=[]), "no devices"),
    (_spec(devices=None), "spec.devices: missing"),
    (_spec(extra=1), r"spec: unknown field\(s\) extra"),
    (_spec(devices=[{"name": "gpu0", "containerEdits": {}}]), r"devices\[0\] \(gpu0\): no containerEdits"),
    (_spec(devices=[{"name": "gpu0", "containerEdits": {"netDevices": []}}]), "unknown field"),
    (_spec(devices=[{"name": "-x", "containerEdits": {"env": ["A=1"]}}]), r"devices\[0\].name: device name '-x'"),
    (_spec(devices=[{"name": "a", "containerEdits": {"env": ["A=1"]}}] * 2), "a second device named 'a'"),
    (_spec(containerEdits={"env": ["=1"]}), r"containerEdits.env\[0\] '=1': must be NAME=value"),
    (_spec(containerEdits={"hooks": [{"hookName": "onBoot", "path": "/x"}]}), "hookName 'onBoot': must be one of"),
    (_spec(containerEdits={"hooks": [{"hookName": "poststop", "path": "/x", "timeout": 0}]}), "timeout: 0 is out of range"),
    (_spec(containerEdits={"deviceNodes": [{"path": "/dev/x", "type": "x"}]}), "type 'x': must be b, c, u or p"),
    (_spec(containerEdits={"deviceNodes": [{"path": "/dev/x", "permissions": "rwx"}]}), "permissions 'rwx'"),
    (_spec(containerEdits={"deviceNodes": [{"path": "/dev/x", "major": True}]}), "major: must be an integer, got bool"),
    (_spec(containerEdits={"deviceNodes": [{"path": "/dev/x", "uid": -1}]}), "uid: -1 is out of range"),
    (_spec(containerEdits={"deviceNodes": [{"type": "c"}]}), r"deviceNodes\[0\].path: missing"),
    (_spec(containerEdits={"mounts": [{"hostPath": "/a"}]}), r"mounts\[0\].containerPath: missing"),
    (_spec(containerEdits={"mounts": [{"hostPath": "/a", "containerPath": "/b", "options": "ro"}]}), "options: must be a list"),
    (_spec(containerEdits={"additionalGids": [2**32]}, cdiVersion="0.7.0"), "must be an integer from 0"),
    ([1, 2], "spec: must be a mapping, got list"),
    # a field newer than the file's cdiVersion (the CDI spec's minimum-version rule)
    (_spec(cdiVersion="0.3.0", containerEdits={"mounts": [{"hostPath": "/a", "containerPath": "/b", "type": "bind"}]}),
     "needs cdiVersion 0.4.0 or later; the file says 0.3.0"),
    (_spec(cdiVersion="0.4.0", containerEdits={"deviceNodes": [{"path": "/dev/x", "hostPath": "/dev/y"}]}), "needs cdiVersion 0.5.0"),
    (_spec(cdiVersion="0.4.0", devices=[{"name": "0", "containerEdits": {"env": ["A=1"]}}]), "starting with a digit needs cdiVersion 0.5.0"),
    (_spec(annotations={"a": "b"}), "annotations needs cdiVersion 0.6.0"),
    (_spec(kind="vendor.com/g.pu"), "class of kind needs cdiVersion 0.6.0"),
    (_spec(cdiVersion="0.6.0", containerEdits={"additionalGids": [5]}), "needs cdiVersion 0.7.0"),
    (_spec(cdiVersion="0.6.0", containerEdits={"intelRdt": {"closID": "x"}}), "needs cdiVersion 0.7.0"),
])
def test_what_refuses_a_spec_file(doc: Any, why: str) -> None:
    with pytest.raises(SpecError, match=why):
        _parse(doc)


def test_bad_yaml_is_named() -> None:
    with pytest.raises(SpecError, match="not valid YAML"):
        specfile.parse("/etc/cdi/x.yaml", b"cdiVersion: [0.5.0\nkind: x")
    with pytest.raises(SpecError, match="not valid JSON"):
        specfile.parse("/etc/cdi/x.json", b"{")
    with pytest.raises(SpecError, match="spec: must be a mapping, got NoneType"):
        specfile.parse("/etc/cdi/x.yaml", b"")


# ---- the catalog of spec dirs ---------------------------------------------------------


def _write(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc) if path.suffix == ".json" else doc)


def _device(name: str, env: str) -> dict[str, Any]:
    return {"name": name, "containerEdits": {"env": [env]}}


def test_later_dirs_win_conflicts_in_one_dir_refuse_and_bad_files_hide_nothing(tmp_path: Path) -> None:
    etc, run = tmp_path / "etc", tmp_path / "run"
    _write(etc / "a.json", _spec(devices=[_device("gpu0", "FROM=etc"), _device("gpu1", "FROM=etc")]))
    _write(run / "b.json", _spec(devices=[_device("gpu1", "FROM=run")]))
    _write(etc / "c.json", _spec(devices=[_device("gpu2", "FROM=c")]))
    _write(etc / "d.json", _spec(devices=[_device("gpu2", "FROM=d")]))  # the same device as c.json, same dir
    _write(run / "e.json", _spec(devices=[_device("gpu0", "FROM=e")], kind="other.com/gpu"))
    _write(etc / "f.yaml", "cdiVersion: 0.5.0\nkind: [")  # bad YAML
    _write(etc / "ignored.txt", "not a spec")
    (etc / "sub.yaml").mkdir()  # a dir: skipped
    cache = registry.SpecCache()
    dirs = [str(etc), str(run), str(tmp_path / "missing")]
    catalog = cache.catalog(dirs)
    assert sorted(catalog.devices) == ["other.com/gpu=gpu0", "vendor.com/gpu=gpu0", "vendor.com/gpu=gpu1"]
    assert catalog.devices["vendor.com/gpu=gpu1"].path == str(run / "b.json")
    assert catalog.conflicts == {"vendor.com/gpu=gpu2": (str(etc / "c.json"), str(etc / "d.json"))}
    assert list(catalog.refused) == [str(etc / "f.yaml")]
    assert [e.env for _label, e in registry.resolve(["vendor.com/gpu=gpu1", "vendor.com/gpu=gpu0"], dirs, cache)] == [
        (), ("FROM=run",), (), ("FROM=etc",)]  # each spec's own edits (none here) before its first device's
    with pytest.raises(InvalidArgument, match="CDI device vendor.com/gpu=gpu2: defined by more than one spec of one dir"):
        registry.resolve(["vendor.com/gpu=gpu2"], dirs, cache)
    with pytest.raises(InvalidArgument, match=r"CDI device vendor.com/gpu=gpu9: no CDI spec in .* defines it "
                                              r"\(refused spec files: .*f.yaml: not valid YAML"):
        registry.resolve(["vendor.com/gpu=gpu9"], dirs, cache)
    _write(run / "c.json", _spec(devices=[_device("gpu2", "FROM=run")]))  # a later dir settles the conflict
    assert cache.catalog(dirs).devices["vendor.com/gpu=gpu2"].path == str(run / "c.json")


def test_a_file_changed_in_place_is_read_again_and_an_unchanged_one_is_not(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gpu.json"
    _write(path, _spec(devices=[_device("gpu0", "V=1")]))
    parsed: list[str] = []
    real = registry.parse
    monkeypatch.setattr(registry, "parse", lambda p, data: parsed.append(p) or real(p, data))
    cache = registry.SpecCache()
    for _ in range(3):
        assert cache.catalog([str(tmp_path)]).devices["vendor.com/gpu=gpu0"].devices["gpu0"].env == ("V=1",)
    assert len(parsed) == 1
    stat = path.stat()
    _write(path, _spec(devices=[_device("gpu0", "V=2")]))  # same size, and the old times put back
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache.catalog([str(tmp_path)]).devices["vendor.com/gpu=gpu0"].devices["gpu0"].env == ("V=2",)
    unchanged = cache.catalog([str(tmp_path)])
    assert cache.catalog([str(tmp_path)]) is unchanged  # nothing changed: the catalog is not made again
    path.unlink()
    assert cache.catalog([str(tmp_path)]).devices == {}


def test_what_is_not_a_readable_spec_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "MAX_SPEC_BYTES", 300)
    _write(tmp_path / "big.json", _spec(devices=[_device(f"d{n}", "A=1") for n in range(10)]))
    os.mkfifo(tmp_path / "fifo.yaml")  # would block a plain open
    _write(tmp_path / "ok.json", _spec())
    (tmp_path / "locked.json").symlink_to(tmp_path / "nonesuch")
    catalog = registry.SpecCache().catalog([str(tmp_path)])
    assert list(catalog.devices) == ["vendor.com/gpu=gpu0"]
    assert {Path(p).name: why for p, why in catalog.refused.items()} == {
        "big.json": "not a regular file of at most 300 bytes", "fifo.yaml": "not a regular file of at most 300 bytes",
        "locked.json": "cannot read: No such file or directory"}


def test_a_refused_file_is_logged_once_per_content(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path / "bad.json", _spec(cdiVersion="9.9.9"))
    cache = registry.SpecCache()
    for _ in range(3):
        cache.catalog([str(tmp_path)])
    assert [r.getMessage() for r in caplog.records].count(
        f"CDI spec {tmp_path / 'bad.json'} is refused: cdiVersion '9.9.9' is not one podrt reads "
        f"({', '.join(specfile.VERSIONS)})") == 1


# ---- edits on an OCI spec ----------------------------------------------------------------


def _oci(uid: int = 0, gid: int = 0) -> dict[str, Any]:
    return {"process": {"user": {"uid": uid, "gid": gid}, "env": ["PATH=/bin", "MODE=cri"]},
            "mounts": [{"destination": "/proc"}, {"destination": "/dev/shm"}, {"destination": "/data/x"}],
            "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]},
                      "devices": [{"path": "/dev/gpu0", "type": "c", "major": 9, "minor": 9}]}}


def test_edits_env_mounts_hooks_and_gids() -> None:
    spec = _oci()
    shared = Edits(env=("MODE=cdi", "SHARED=1"), additional_gids=(0, 44, 45))
    own = Edits(env=("GPU=0",), additional_gids=(44,),
                mounts=(MountEdit("/host/lib", "/data", ("ro", "bind")), MountEdit("/h/shm", "/dev/shm", (), "tmpfs")),
                hooks=(HookEdit("poststop", "/bin/a"), HookEdit("createRuntime", "/bin/b", ("b", "-x"), ("K=V",), 3),
                       HookEdit("poststop", "/bin/c")))
    edits.apply(spec, [("CDI spec s", shared), ("CDI device d", own)])
    assert spec["process"]["env"] == ["PATH=/bin", "MODE=cdi", "SHARED=1", "GPU=0"]  # a CDI variable replaces the CRI's
    assert spec["process"]["user"]["additionalGids"] == [44, 45]
    assert spec["mounts"] == [{"destination": "/proc"}, {"destination": "/data", "source": "/host/lib", "options": ["ro", "bind"]},
                              {"destination": "/data/x"}, {"destination": "/dev/shm", "source": "/h/shm", "type": "tmpfs"}]
    # replaced at its destination, then sorted by depth, stably: the parent /data before /data/x
    assert spec["hooks"] == {"poststop": [{"path": "/bin/a", "args": [], "env": []}, {"path": "/bin/c", "args": [], "env": []}],
                             "createRuntime": [{"path": "/bin/b", "args": ["b", "-x"], "env": ["K=V"], "timeout": 3}]}


def test_device_nodes_from_the_host_and_as_given() -> None:
    null = os.stat("/dev/null")
    spec = _oci(uid=1000, gid=100)
    nodes = (NodeEdit("/dev/gpu0", host_path="/dev/null"),  # all from the host; replaces the CRI's node at that path
             NodeEdit("/dev/fake", type="b", major=7, minor=8, file_mode=0o640, permissions="r", uid=5),  # complete: no host node needed
             NodeEdit("/dev/null", permissions="none", file_mode=0o600),
             NodeEdit("/dev/fifo", type="p"))
    edits.apply(spec, [("CDI device d", Edits(device_nodes=nodes))])
    null_mode = null.st_mode & 0o7777
    assert spec["linux"]["devices"] == [
        {"path": "/dev/gpu0", "type": "c", "major": 1, "minor": 3, "fileMode": null_mode, "uid": 1000, "gid": 100},
        {"path": "/dev/fake", "type": "b", "major": 7, "minor": 8, "fileMode": 0o640, "uid": 5, "gid": 100},
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600, "uid": 1000, "gid": 100},
        {"path": "/dev/fifo", "type": "p", "major": 0, "minor": 0, "fileMode": 0o666, "uid": 1000, "gid": 100}]
    assert spec["linux"]["resources"]["devices"][1:] == [
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": True, "type": "b", "major": 7, "minor": 8, "access": "r"}]  # "none": a node, and no rule to use it


@pytest.mark.parametrize("node, why", [
    (NodeEdit("/dev/nonesuch-cdi"), "CDI device d: device node /dev/nonesuch-cdi: host node /dev/nonesuch-cdi: No such file"),
    (NodeEdit("/dev/x", host_path="/etc/hostname"), "host node /etc/hostname: not a device node"),
    (NodeEdit("/dev/x", host_path="/dev/null", type="b"), "is of type b, but the host's /dev/null is c"),
    (NodeEdit("/dev/x", host_path="/dev/nonesuch-cdi", type="c"), "No such file"),  # a type without a major: not complete
])
def test_device_node_refusals(node: NodeEdit, why: str) -> None:
    with pytest.raises(FailedPrecondition, match=why):
        edits.apply(_oci(), [("CDI device d", Edits(device_nodes=(node,)))])


def test_intel_rdt_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match="CDI spec s: intelRdt edits are not supported"):
        edits.apply(_oci(), [("CDI spec s", Edits(intel_rdt=True)), ("CDI device d", Edits(env=("A=1",)))])


# ---- the CRI request and the spec builder ------------------------------------------------


def test_cri_field_then_annotations_without_duplicates() -> None:
    req = _request()
    req.config.cdi_devices = [cri.CdiDevice(name="v.com/c=b"), cri.CdiDevice(name="v.com/c=a"), cri.CdiDevice(name="v.com/c=b")]
    req.config.annotations = {"cdi.k8s.io/z": "v.com/c=a,v.com/c=z", "cdi.k8s.io/plugin_dev": "v.com/c=y", "other": "x"}
    cfg = cconv.container_config(req)
    assert cfg.cdi_devices == ("v.com/c=b", "v.com/c=a", "v.com/c=y", "v.com/c=z")
    assert container_config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg  # kept in the state file
    assert container_config_from_dict({"name": "old"}).cdi_devices == ()  # a record from before CDI


@pytest.mark.parametrize("field, annotations, why", [
    (["gpu0"], {}, r"config.CDI_devices\[0\].name: 'gpu0' is not a fully qualified CDI device name"),
    (["v.com/c=ok", "v.com/c=bad!"], {}, r"config.CDI_devices\[1\].name: CDI device 'v.com/c=bad!': device name 'bad!'"),
    ([], {"cdi.k8s.io/x": "v.com/c=a, v.com/c=b"}, r"config.annotations\['cdi.k8s.io/x'\]: CDI device ' v.com/c=b'"),
    ([], {"cdi.k8s.io/x": ""}, r"config.annotations\['cdi.k8s.io/x'\]: '' is not a fully qualified"),
])
def test_cri_names_are_checked(field: list[str], annotations: dict[str, str], why: str) -> None:
    req = _request()
    req.config.cdi_devices = [cri.CdiDevice(name=n) for n in field]
    req.config.annotations = annotations
    with pytest.raises(InvalidArgument, match=why):
        cconv.container_config(req)


def test_the_spec_builder_applies_cdi_last(tmp_path: Path) -> None:
    cdi_dir, rootfs = tmp_path / "cdi", tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    _write(cdi_dir / "v.yaml", YAML.format(version="0.3.0"))
    config = Config(runtime=RuntimeConfig(cdi_spec_dirs=(str(cdi_dir),)))
    cfg = ContainerConfig(name="c", image="i", envs=(("GPU", "cri"),), cdi_devices=("vendor.com/gpu=gpu0",))
    spec = build_container_spec(_ctx(rootfs, cfg), config)
    assert "GPU=0" in spec["process"]["env"] and "SHARED=1" in spec["process"]["env"] and "GPU=cri" not in spec["process"]["env"]
    assert {"path": "/dev/gpu0", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640, "uid": 0, "gid": 0} in spec["linux"]["devices"]
    assert spec["linux"]["resources"]["devices"][-1] == {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}
    assert {"destination": "/usr/lib/gpu", "source": "/usr/lib/gpu", "options": ["ro", "nosuid", "nodev", "bind"]} in spec["mounts"]
    assert spec["hooks"]["createContainer"][0]["path"] == "/usr/bin/gpu-hook"
    unknown = ContainerConfig(name="c", image="i", cdi_devices=("vendor.com/gpu=gpu7",))
    with pytest.raises(InvalidArgument, match=f"CDI device vendor.com/gpu=gpu7: no CDI spec in {cdi_dir} defines it"):
        build_container_spec(_ctx(rootfs, unknown), config)
    assert "hooks" not in build_container_spec(_ctx(rootfs, ContainerConfig(name="c", image="i")), config)  # none asked: no edits
