"""The bubblewrap jail of one tool call: what the jailed program can see, the `bwrap` command
line that builds it, and the user-namespace mapping the parent writes when it runs as root."""

from __future__ import annotations

import functools
import json
import os
import select
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

JAIL_UID = 65534  # "nobody": the jailed program's uid inside and, on a root host, outside too
JAIL_GID = 65534
WORKDIR = "/sandbox"  # the only writable place in the jail, a size-limited tmpfs
SITE_MOUNT = "/opt/site-packages"  # where the parent's site-packages appear, read-only

# The only variables the jailed program sees; nothing of the host's environment is passed on.
JAIL_ENV = {
    "HOME": WORKDIR,
    "TMPDIR": WORKDIR,
    "LANG": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

# On a root host the bootstrap starts as root of the call's own user namespace and needs these
# to lock the namespace and become JAIL_UID; it holds none of them when the model's code runs.
BOOTSTRAP_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_SYS_RESOURCE")

_LIBRARY_DIRS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32")
_TOP_LIBRARY_DIRS = ("/lib", "/lib64", "/lib32", "/libx32")


@dataclass(frozen=True)
class JailLayout:
    """What the jail's read-only root holds, and the interpreter that runs in it."""

    python: str  # the interpreter, at the same path inside as outside
    ro_binds: tuple[tuple[str, str], ...]  # (host path, jail path)
    symlinks: tuple[tuple[str, str], ...]  # (target, jail path)
    site_dirs: tuple[str, ...]  # jail paths the bootstrap adds with site.addsitedir


@functools.cache  # the interpreter and its installation do not change within a process
def jail_layout() -> JailLayout:
    """System libraries, the Python installation and the parent's site-packages; nothing else of
    the host (no /etc but the loader cache, no /home, /root, /tmp, /work, data or repository)."""
    binds: list[tuple[str, str]] = [(d, d) for d in _LIBRARY_DIRS if _is_real_dir(d)]
    symlinks: list[tuple[str, str]] = []
    for top in _TOP_LIBRARY_DIRS:
        if os.path.islink(top):  # merged /usr: /lib -> usr/lib
            symlinks.append((os.readlink(top), top))
        elif os.path.isdir(top):
            binds.append((top, top))
    if os.path.isfile("/etc/ld.so.cache"):
        binds.append(("/etc/ld.so.cache", "/etc/ld.so.cache"))

    base = os.path.realpath(sys.base_prefix)
    python = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    if base not in ("/", "/usr"):
        binds.append((base, base))  # e.g. /root/.pyenv/versions/3.11.7, /usr/local, /opt/python
    else:  # a distribution's Python: its stdlib is under /usr/lib already
        for key in ("stdlib", "platstdlib"):
            path = os.path.realpath(sysconfig.get_paths(vars={"base": base, "platbase": base})[key])
            if not _covered(path, binds):
                binds.append((path, path))
    if not _covered(python, binds):
        binds.append((python, python))

    site_dirs: dict[str, str] = {}  # host path -> jail path
    for key in ("purelib", "platlib"):
        path = os.path.realpath(sysconfig.get_path(key))
        if path in site_dirs or not os.path.isdir(path):
            continue
        if _covered(path, binds):
            site_dirs[path] = path
        else:  # a venv's site-packages: mounted under a neutral name, not its host path
            site_dirs[path] = f"{SITE_MOUNT}/{len(site_dirs)}"
            binds.append((path, site_dirs[path]))
    return JailLayout(python, tuple(binds), tuple(symlinks), tuple(site_dirs.values()))


def _is_real_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def _covered(path: str, binds: list[tuple[str, str]]) -> bool:
    """Whether `path` is visible at the same path through one of the binds."""
    return any(
        host == jail and (path == host or path.startswith(host.rstrip("/") + "/"))
        for host, jail in binds
    )


def bwrap_argv(
    bwrap: str,
    layout: JailLayout,
    *,
    as_root: bool,
    code_fd: int,
    disk_bytes: int,
    bootstrap: str,
    config: dict[str, object],
    info_fd: int | None = None,
    block_fd: int | None = None,
) -> list[str]:
    """The command that runs `bootstrap` in a fresh jail with the code from `code_fd` as
    WORKDIR/main.py.

    As root, bwrap creates the user namespace and waits on `block_fd` until the parent has
    mapped uid 0 (for bwrap's own setup and the bootstrap's first lines) and JAIL_UID to the
    same host ids (`map_user_namespace`); the bootstrap then locks the namespace and becomes
    JAIL_UID, so the model's code runs as the host's `nobody`, under which RLIMIT_NPROC and file
    permissions hold. Otherwise bwrap maps JAIL_UID to the calling user and disables nested user
    namespaces itself.
    """
    argv = [
        bwrap,
        "--unshare-user",
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
    ]
    if as_root:
        if info_fd is None or block_fd is None:
            raise ValueError("as root, the jail needs info_fd and block_fd to map its user")
        argv += ["--userns-block-fd", str(block_fd), "--info-fd", str(info_fd), "--cap-drop", "ALL"]
        for capability in BOOTSTRAP_CAPS:
            argv += ["--cap-add", capability]
    else:
        argv += ["--uid", str(JAIL_UID), "--gid", str(JAIL_GID), "--disable-userns"]

    destinations = [jail for _, jail in layout.ro_binds] + [link for _, link in layout.symlinks]
    destinations += [WORKDIR, "/tmp", "/proc", "/dev"]
    # bwrap makes missing parents of a mount point owner-only; nobody could not pass them.
    for directory in _parents(destinations):
        argv += ["--perms", "0755", "--dir", directory]
    for host, jail in layout.ro_binds:
        argv += ["--ro-bind", host, jail]
    for target, link in layout.symlinks:
        argv += ["--symlink", target, link]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "0755", "--size", str(disk_bytes), "--tmpfs", WORKDIR]
    argv += ["--perms", "0644", "--file", str(code_fd), f"{WORKDIR}/main.py"]
    argv += ["--symlink", WORKDIR, "/tmp", "--chdir", WORKDIR, "--remount-ro", "/"]
    argv += ["--clearenv"]
    for name, value in JAIL_ENV.items():
        argv += ["--setenv", name, value]
    argv += ["--", layout.python, "-I", "-S", "-B", "-c", bootstrap, json.dumps(config)]
    return argv


def _parents(paths: list[str]) -> list[str]:
    """Every ancestor directory of `paths` (not / and not the paths themselves), parents first."""
    targets = set(paths)
    found: set[str] = set()
    for path in paths:
        for parent in PurePosixPath(path).parents:
            if str(parent) != "/" and str(parent) not in targets:
                found.add(str(parent))
    return sorted(found, key=lambda p: (p.count("/"), p))


def map_user_namespace(info_fd: int, block_fd: int, deadline: float) -> None:
    """As root: read the jailed child's pid from bwrap's info fd, map uid/gid 0 and JAIL_UID/GID
    to the same host ids in its user namespace, and let bwrap go on."""
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("bwrap did not report its child in time")
        ready, _, _ = select.select([info_fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(info_fd, 4096)
        if not chunk:
            break
        data += chunk
    if not data:
        raise OSError("bwrap exited before creating the jail")
    pid = int(json.loads(data)["child-pid"])
    for name, jail_id in (("uid_map", JAIL_UID), ("gid_map", JAIL_GID)):
        with open(f"/proc/{pid}/{name}", "w") as mapping:
            mapping.write(f"0 0 1\n{jail_id} {jail_id} 1\n")
    os.write(block_fd, b"1")
