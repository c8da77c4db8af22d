"""Atomic writes: a reader sees the old file or the new one, never half of one."""

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import Z1Error


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file and a rename; errors are one line."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file and a rename; errors are one line."""
    path = Path(path)
    if path.is_dir():
        raise Z1Error(f"{path} is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise Z1Error(describe_os_error(err, path)) from err
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes 0600 files; keep an existing file's mode, else the usual one.
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        with _suppress():
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise Z1Error(describe_os_error(err, path)) from err
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextmanager
def _suppress():
    try:
        yield
    except OSError:
        pass


TMP_MARK = ".partial-"


def partial_dir_for(out: Path) -> Path:
    """A hidden sibling of `out` to build into; the pid lets stale ones be swept."""
    return out.parent / f"{TMP_MARK}{out.name}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # kill(0, ...) would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_partials(parent: Path) -> list[Path]:
    """Remove half-built directories left by killed processes."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        if not entry.name.startswith(TMP_MARK):
            continue
        try:
            pid = int(entry.name.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            _remove(entry)
            removed.append(entry)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with _suppress():
            path.unlink()


def publish_dir(tmp: Path, out: Path, replace: bool) -> None:
    """Move a finished build into place in one rename (swapping out an old one)."""
    if out.exists():
        if not replace:
            raise Z1Error(f"{out} already exists (use --force to replace it)")
        old = out.parent / f"{TMP_MARK}old-{out.name}-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        _remove(old)
    else:
        os.replace(tmp, out)


def describe_os_error(err: OSError, path: Path) -> str:
    if err.errno == errno.ENOSPC:
        return f"disk full while writing {path}"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path} is not writable ({err.strerror})"
    return f"cannot write {path}: {err.strerror or err}"


def is_write_failure(err: BaseException) -> bool:
    """mlx's own file writers (safetensors, npz) fail with a bare RuntimeError, no errno."""
    return isinstance(err, RuntimeError) and str(err).startswith("[write]")


def describe_write_failure(err: BaseException, path: Path) -> str:
    if isinstance(err, OSError):
        return describe_os_error(err, path)
    detail = str(err).removeprefix("[write]").strip().rstrip(".")
    return f"cannot write {path} ({detail}): the disk is full or not writable; free some space or write elsewhere"


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


@contextmanager
def building_dir(out: Path, replace: bool = False):
    """Build a directory beside `out` and rename it into place only if the block succeeds.

    Interrupted or failed, nothing that looks like the result is left behind; a build
    killed outright leaves a hidden partial directory that the next build sweeps away.
    """
    out = Path(out)
    if out.exists() and not replace:
        raise Z1Error(f"{out} already exists (use --force to replace it)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise Z1Error(describe_os_error(err, out.parent)) from err
    sweep_partials(out.parent)
    tmp = partial_dir_for(out)
    try:
        yield tmp
        publish_dir(tmp, out, replace=replace)
    except OSError as err:
        raise Z1Error(describe_os_error(err, out)) from err
    except RuntimeError as err:
        if is_write_failure(err):
            raise Z1Error(describe_write_failure(err, out)) from err
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
