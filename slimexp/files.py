"""Files written so that a reader never sees half of one and a killed writer's leftovers
are recognised: temporary names with host and pid, atomic renames, fsynced folders, and
the permissions of an ordinary write under the user's umask."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any

# A temporary file older than this cannot belong to a live write of a small JSON record.
STALE_TMP_SECONDS = 3600
_HOST = socket.gethostname().replace("~", "-")


def temporary_name(target: Path) -> Path:
    """`.<name>~<host>~<pid>~<random>.tmp` beside the target: whoever opens the store next
    can tell a killed writer's leftover from a live one."""
    return target.parent / f".{target.name}~{_HOST}~{os.getpid()}~{secrets.token_hex(4)}.tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale_temporary(path: Path, max_age: float = STALE_TMP_SECONDS) -> bool:
    """Left by a writer that is gone: its pid is dead on this host, or (another host's, or
    an older name) it was last touched more than `max_age` seconds ago."""
    parts = path.name[: -len(".tmp")].split("~")
    if len(parts) == 4 and parts[1] == _HOST and parts[2].isdigit() and not _pid_alive(int(parts[2])):
        return True
    try:
        return time.time() - path.stat().st_mtime > max_age
    except FileNotFoundError:
        return False


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a crash right after it keeps the new entry)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def write_json_atomic(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    # 0o666 under the umask: the permissions of an ordinary write (mkstemp would force 0600,
    # unreadable to colleagues sharing a cluster store).
    handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(payload, out, indent=1, default=str)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def writable(folder: Path) -> bool:
    """Whether files can be created in `folder` (or, if it does not exist yet, in the
    nearest existing folder above it, where it would be made)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        return False
    probe = temporary_name(folder / "write-probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.unlink(probe)
    except OSError:
        return False
    return True


def current_umask() -> int:
    try:  # Linux states it without changing it (os.umask can only read by setting)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ordinary_permissions(folder: Path) -> None:
    """Give every file in `folder` the mode an ordinary write would have (0666 under the
    umask): libraries that write through a private temporary file (safetensors) leave 0600."""
    mode = 0o666 & ~current_umask()
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(mode)
