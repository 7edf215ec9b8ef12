"""The `podrt` command: serve, config, check, version."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from podrt import __version__
from podrt.config import Config, ConfigError, dump_config, load_config
from podrt.errors import PodrtError

# flag -> dotted config key (CLI flags override the files)
_FLAG_KEYS = {
    "root": "podrt.root",
    "runroot": "podrt.runroot",
    "listen": "podrt.api.listen",
    "log_level": "podrt.log_level",
    "cni_config_dir": "podrt.network.network_dir",
    "cni_plugin_dir": "podrt.network.plugin_dirs",
}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="config file (default /etc/podrt/podrt.toml; drop-ins from its podrt.d/)")
    common.add_argument("--root", help="persistent state dir (default /var/lib/podrt)")
    common.add_argument("--runroot", help="volatile state dir (default /run/podrt)")
    common.add_argument("--listen", help="CRI unix socket path (default <runroot>/podrt.sock)")
    common.add_argument("--log-level", help="debug, info, warning or error")
    common.add_argument("--cni-config-dir", help="CNI config dir (default /etc/cni/net.d)")
    common.add_argument("--cni-plugin-dir", action="append", help="CNI plugin dir; repeat for several")

    parser = argparse.ArgumentParser(prog="podrt", description="Kubernetes CRI runtime daemon")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", parents=[common], help="run the CRI daemon")
    sub.add_parser("config", parents=[common], help="print the effective config as TOML")
    sub.add_parser("check", parents=[common], help="check that this host can run pods")
    sub.add_parser("install-network", parents=[common],
                   help="write a default bridge pod network into the CNI config dir, unless it holds one")
    image = sub.add_parser("image", help="the image store")
    image_sub = image.add_subparsers(dest="image_command", required=True)
    image_sub.add_parser("ls", parents=[common], help="list the images the store holds")
    image_import = image_sub.add_parser("import", parents=[common],
                                        help="load an image archive (OCI image layout or docker save; tar, tar.gz or dir)")
    image_import.add_argument("file", type=Path, help="the archive: a tar file (optionally gzip-compressed) or a directory")
    image_import.add_argument("--name", metavar="REF",
                              help="name the archive's image REF (e.g. registry.k8s.io/pause:3.10) instead of the names "
                                   "the archive gives; the archive must hold one image")
    sub.add_parser("version", help="print the version")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {key: getattr(args, flag) for flag, key in _FLAG_KEYS.items() if getattr(args, flag, None) is not None}


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("hpack", "h2", "asyncio"):  # per-frame debug lines drown ours
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))


def _serve(cfg: Config) -> int:
    from podrt.aio.loop import run  # imported late: `podrt config` stays light
    from podrt.daemon import Daemon

    async def serve() -> None:
        await Daemon(cfg).serve_until_signal()  # built inside the loop it serves on

    try:
        run(serve())
    except PodrtError as exc:
        print(f"podrt: {exc}", file=sys.stderr)
        return 1
    return 0


def _image_ls(cfg: Config) -> int:
    """Reads the store's records as they are on disk (the daemon may be running)."""
    from podrt.images.store import ImageStore

    store = ImageStore(Path(cfg.root) / "images")
    if not store.records_dir.is_dir():
        print(f"no image store at {store.dir}")
        return 0
    for path, problem in store.load_records():
        print(f"podrt: unreadable image record {path}: {problem}", file=sys.stderr)
    print(f"{'IMAGE':<60} {'ID':<13} {'SIZE':>10}  PINNED")
    for r in sorted(store.records(), key=lambda r: (r.repo_tags or r.repo_digests or (r.id,))[0]):
        name = (r.repo_tags or r.repo_digests or ("<none>",))[0]
        print(f"{name:<60} {r.id[7:19]:<13} {r.size / 1e6:>8.1f}MB  {'yes' if r.pinned else ''}")
    return 0


def _image_import(cfg: Config, archive: Path, name: str | None = None) -> int:
    """Imports beside a running daemon: no garbage collection here (the daemon owns it)."""
    from podrt.images.archive import import_archive
    from podrt.images.store import ImageStore

    store = ImageStore(Path(cfg.root) / "images")
    try:
        store.ensure_dirs()
        with store.exclusive(wait=True):  # the daemon collects no garbage meanwhile
            for path, problem in store.load_records():
                print(f"podrt: unreadable image record {path}: {problem}", file=sys.stderr)
            records = asyncio.run(import_archive(store, archive, name))
    except (PodrtError, OSError) as exc:
        print(f"podrt: cannot import {archive}: {exc}" if isinstance(exc, OSError) else f"podrt: {exc}", file=sys.stderr)
        return 1
    for r in records:
        print(f"{', '.join(r.repo_tags) or r.id:<60} {r.id}")
    return 0


SIGPIPE_EXIT = 128 + signal.SIGPIPE  # 141


def main(argv: Sequence[str] | None = None) -> int:
    """`podrt ...`; a reader that closes our stdout early (`podrt image ls | head -1`)
    ends the command quietly.

    Python ignores SIGPIPE, so a write to a closed pipe raises BrokenPipeError
    (a traceback, and another from the interpreter's last flush). Coreutils
    die of SIGPIPE there, which a shell reports as 141 (128 + 13): podrt exits
    with that code, so `set -o pipefail` scripts see what they see for `ls`,
    and nothing is printed. stdout then points at /dev/null, where the final
    flush of what is still buffered cannot fail. The daemon (serve) writes
    no stdout, so there a BrokenPipeError would be a bug, and is not hidden.
    """
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit:  # after --help or a usage message
            sys.stdout.flush()
            raise
        if args.command != "serve":
            code = _command(args)
            sys.stdout.flush()  # output that fit the buffer meets the closed pipe here, not at exit
            return code
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return SIGPIPE_EXIT
    return _command(args)


def _command(args: argparse.Namespace) -> int:
    if args.command == "version":
        print(f"podrt {__version__} (CRI v1)")
        return 0
    try:
        cfg = load_config(args.config, overrides=_overrides(args))
    except ConfigError as exc:
        print(f"podrt: config error: {exc}", file=sys.stderr)
        return 1
    if args.command == "config":
        sys.stdout.write(dump_config(cfg))
        return 0
    if args.command == "check":
        from podrt.node.check import format_results, run_checks

        report, healthy = format_results(run_checks(cfg))
        print(report)
        return 0 if healthy else 1
    if args.command == "image":
        if args.image_command == "import":
            return _image_import(cfg, args.file, args.name)
        return _image_ls(cfg)
    if args.command == "install-network":
        from podrt.network import default

        try:
            print(default.install(Path(cfg.network.network_dir)))
        except (OSError, RuntimeError) as exc:
            print(f"podrt: cannot install the default network: {exc}", file=sys.stderr)
            return 1
        return 0
    _setup_logging(cfg.log_level)
    return _serve(cfg)


if __name__ == "__main__":
    sys.exit(main())
