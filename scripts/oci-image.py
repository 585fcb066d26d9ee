#!/usr/bin/env python3
"""Writes an OCI image archive (oci-layout, index.json, blobs/) with no
registry, daemon or image tool: the archive `ctr images import` takes.

    oci-image.py OUT.tar --ref sbx.local/sbx-operator --tag dev \\
        --elf /usr/local/bin/sbx-operator=build/operator/sbx-operator \\
        --user 65532:65532 --entrypoint '["/usr/local/bin/sbx-operator"]'

Contents come from, in this order (later entries win): --base TAR (a root
file system as a tar, such as mmdebstrap writes), --dir, --file, --tree (a
folder), --elf (a dynamically linked program plus every library `ldd` finds
and its loader, at the paths the program expects), --text and --symlink. One layer, written the
same way every time (sorted names, owner 0, time 0), so the same inputs give
the same digests. Besides the --tag tags, the image gets a tag made from its
own digest, which is printed: a rebuilt binary is a new tag, so a kubelet that
never pulls cannot run a stale image.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Tree:
    """The files of the layer, by path without a leading slash."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.entries:
                self.dir(d, 0o755)

    def _put(self, ti: tarfile.TarInfo, data: bytes | None) -> None:
        ti.name = ti.name.strip("/")
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        ti.mtime = 0
        self._parents(ti.name)
        self.entries[ti.name] = (ti, data)

    def dir(self, path: str, mode: int) -> None:
        ti = tarfile.TarInfo(path)
        ti.type, ti.mode = tarfile.DIRTYPE, mode
        self._put(ti, None)

    def file(self, path: str, data: bytes, mode: int) -> None:
        ti = tarfile.TarInfo(path)
        ti.size, ti.mode = len(data), mode
        self._put(ti, data)

    def symlink(self, path: str, target: str) -> None:
        ti = tarfile.TarInfo(path)
        ti.type, ti.linkname = tarfile.SYMTYPE, target
        self._put(ti, None)

    def base(self, tar_path: str) -> None:
        """Every member of a root file system tar, as it is (owners and modes kept)."""
        with tarfile.open(tar_path) as t:
            for ti in t:
                name = ti.name.strip("/").removeprefix("./")
                if not name or name == ".":
                    continue
                data = t.extractfile(ti).read() if ti.isreg() else None
                ti.name = name
                ti.mtime = 0
                self.entries[name] = (ti, data)

    def tree(self, dest: str, src: str) -> None:
        """A folder of the host, with its files, links and modes, at dest."""
        for root, dirs, files in os.walk(src):
            rel = os.path.relpath(root, src)
            base = dest.rstrip("/") + ("" if rel == "." else "/" + rel)
            self.dir(base, os.stat(root).st_mode & 0o7777)
            for name in sorted(dirs + files):
                path = os.path.join(root, name)
                if os.path.islink(path):
                    self.symlink(f"{base}/{name}", os.readlink(path))
                elif os.path.isfile(path):
                    with open(path, "rb") as f:
                        self.file(f"{base}/{name}", f.read(), os.stat(path).st_mode & 0o7777)

    def elf(self, dest: str, src: str) -> None:
        """A program with the shared libraries and loader it needs."""
        with open(src, "rb") as f:
            self.file(dest, f.read(), 0o755)
        out = subprocess.run(["ldd", src], capture_output=True, text=True)
        if out.returncode != 0 and "not a dynamic executable" in (out.stdout + out.stderr):
            return  # static: nothing more to add
        if out.returncode != 0:
            sys.exit(f"oci-image: ldd {src}: {out.stderr.strip()}")
        for line in out.stdout.splitlines():
            # "libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            m = re.match(r"\s*(\S+) => (/\S+) \(", line) or re.match(r"\s*(/\S+) \(", line)
            if not m:
                if "not found" in line:
                    sys.exit(f"oci-image: {src} needs a library that is not installed: {line.strip()}")
                continue  # linux-vdso
            path = m.group(m.lastindex)
            with open(os.path.realpath(path), "rb") as f:
                self.file(path, f.read(), 0o755)

    def tar(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for name in sorted(self.entries):
                ti, data = self.entries[name]
                t.addfile(ti, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()


def split_spec(spec: str, what: str) -> tuple[str, str]:
    dest, sep, rest = spec.partition("=")
    if not sep or not dest.startswith("/"):
        sys.exit(f"oci-image: {what} wants /DEST=VALUE, got '{spec}'")
    return dest, rest


def mode_of(spec: str, default: int) -> tuple[str, int]:
    m = re.fullmatch(r"(.*):([0-7]{3,4})", spec)
    return (m.group(1), int(m.group(2), 8)) if m else (spec, default)


def build(a: argparse.Namespace) -> str:
    tree = Tree()
    for path in a.base:
        tree.base(path)
    for spec in a.dir:
        path, mode = mode_of(spec, 0o755)
        tree.dir(path, mode)
    for spec in a.file:
        dest, src = split_spec(spec, "--file")
        src, mode = mode_of(src, 0o644)
        with open(src, "rb") as f:
            tree.file(dest, f.read(), mode)
    for spec in a.tree:
        dest, src = split_spec(spec, "--tree")
        tree.tree(dest, src)
    for spec in a.elf:
        dest, src = split_spec(spec, "--elf")
        tree.elf(dest, src)
    for spec in a.text:
        dest, text = split_spec(spec, "--text")
        tree.file(dest, text.encode().decode("unicode_escape").encode(), 0o644)
    for spec in a.symlink:
        dest, target = split_spec(spec, "--symlink")
        tree.symlink(dest, target)

    layer = tree.tar()
    gz = gzip.compress(layer, compresslevel=6, mtime=0)
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *a.env]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": json.loads(a.entrypoint), "Cmd": json.loads(a.cmd),
                   "Env": env, "User": a.user, "WorkingDir": a.workdir,
                   "Labels": {"org.opencontainers.image.source": "sbx"}},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
        "history": [{"created_by": "scripts/oci-image.py"}],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(gz), "size": len(gz)}],
    }, sort_keys=True).encode()
    content_tag = sha256(manifest)[7:19]
    refs = [f"{a.ref}:{t}" for t in [*a.tag, content_tag]]
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": sha256(manifest), "size": len(manifest),
                       "platform": {"architecture": "amd64", "os": "linux"},
                       "annotations": {"io.containerd.image.name": ref,
                                       "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}}
                      for ref in refs],
    }, sort_keys=True).encode()

    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w") as out:
        def add(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            out.addfile(ti, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for data in (config, gz, manifest):
            add("blobs/sha256/" + sha256(data)[7:], data)
    os.replace(tmp, a.out)
    return f"{a.ref}:{content_tag}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the archive to write")
    ap.add_argument("--ref", required=True, help="image name without a tag")
    ap.add_argument("--tag", action="append", default=[], help="a tag besides the content tag")
    ap.add_argument("--base", action="append", default=[], help="a root file system tar")
    ap.add_argument("--dir", action="append", default=[], help="/DEST[:MODE]")
    ap.add_argument("--file", action="append", default=[], help="/DEST=SRC[:MODE]")
    ap.add_argument("--tree", action="append", default=[], help="/DEST=SRCDIR, recursively")
    ap.add_argument("--elf", action="append", default=[], help="/DEST=SRC, with its libraries")
    ap.add_argument("--text", action="append", default=[], help="/DEST=TEXT (\\n escapes)")
    ap.add_argument("--symlink", action="append", default=[], help="/DEST=TARGET")
    ap.add_argument("--entrypoint", default="null", help="JSON list")
    ap.add_argument("--cmd", default="null", help="JSON list")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE")
    ap.add_argument("--user", default="", help="UID[:GID] the image runs as")
    ap.add_argument("--workdir", default="/")
    print(build(ap.parse_args()))


if __name__ == "__main__":
    main()
