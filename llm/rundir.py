"""Run directories: validate an output directory before anything is written, claim it (one lock per run
directory), write into it atomically (checkpoints, the final model, small files) and publish a run only once
it has started.  The trainers, the export and the opinion benchmark all write through these.

* :func:`check_output_path` / :func:`check_output_dir`: what can be said of ``--out`` before any work starts.
* :func:`run_session`: claim ``out`` (lock, ``--resume`` / ``--overwrite`` rules) for the length of a run.
* :func:`atomic_dir`: write into a temporary sibling directory, then rename it into place, so that an
  interrupted save never leaves a half-written checkpoint.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path


class TrainingError(RuntimeError):
    """A run that must stop (non-finite loss, mismatched models, nothing to train on)."""


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike):
    """Yield a temporary sibling directory; on success rename it to ``final`` (replacing it)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException as e:
        # libraries report a full disk in their own words (torch.save: "unexpected pos ..."):
        # name it as the OSError it is, so that the command line prints one line
        full = not isinstance(e, OSError) and isinstance(e, Exception) and _disk_nearly_full(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise OSError(errno.ENOSPC, "No space left on device", str(final)) from None
        raise
    publish_dir(tmp, final)


def publish_dir(tmp: Path, final: Path) -> None:
    """fsync the finished temporary folder ``tmp`` and rename it to ``final`` (replacing it)."""
    _fsync_tree(tmp)
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _disk_nearly_full(path: Path, margin: int = 1 << 20) -> bool:
    try:
        return shutil.disk_usage(path).free < margin
    except OSError:
        return False


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``path`` through a fsync'ed temporary file renamed into place (never half-written)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file under ``root`` and the directories themselves (before a rename publishes them)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(dirpath))


# --------------------------------------------------------------------------- output paths and run directories
#: files and folders a stage writes into its ``out`` directory
RUN_MARKERS = ("config.yaml", "metrics.jsonl", "model", "checkpoints")


def check_output_path(path: str | os.PathLike, name: str = "out") -> Path:
    """What can be said of an output directory without creating anything: one-line
    :class:`TrainingError` when ``path`` is empty, is a file or lies under a file."""
    if not str(path).strip():
        raise TrainingError(f"{name}: an empty path; give an output directory (e.g. --{name.lstrip('-')} out/run)")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise TrainingError(f"{name}: {p} exists and is a file, not a directory")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise TrainingError(f"{name}: {p} lies under {parent}, which is a file")
            break
    return p


def check_output_dir(path: str | os.PathLike, name: str = "out") -> Path:
    """The one check of an output directory, before any work: ConfigError-style one-line
    :class:`TrainingError` when ``path`` is empty, is a file, lies under a file, or cannot be
    created or written (read-only or pseudo filesystem, permissions).  Creates the directory."""
    p = check_output_path(path, name)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".write-probe-{os.getpid()}"
        with open(probe, "w") as fh:
            fh.write("ok")
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as e:
        raise TrainingError(f"{name}: cannot write in {p} ({e.strerror or e})") from None
    return p


def remove_stale_temporaries(out: Path) -> list[str]:
    """Delete ``.tmp-*``/``.old-*`` leftovers of an interrupted atomic write (kill -9) in ``out``
    and ``out/checkpoints`` whose writing process is gone; returns their names."""
    removed = []
    for folder in (out, out / "checkpoints"):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if not (entry.name.startswith(".tmp-") or entry.name.startswith(".old-")):
                continue
            pid = entry.name.rsplit("-", 1)[-1]
            if pid.isdigit() and _alive(int(pid)):
                continue
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_run_dir(out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Check ``out`` (:func:`check_output_dir`) and make sure no run is overwritten silently.

    A directory that already holds a run (any of :data:`RUN_MARKERS`) needs ``resume`` (continue
    it) or ``overwrite`` (replace it: see :func:`run_session`, which keeps the old run aside until
    the new one has finished); anything else is a one-line error.  Leftovers of an interrupted
    checkpoint write are removed."""
    p = check_output_dir(out)
    held = [m for m in RUN_MARKERS if (p / m).exists()]
    if held and not resume and not overwrite:
        raise TrainingError(f"out: {p} already holds a run ({', '.join(held)}); pass --resume {p} to continue "
                            "it, --overwrite to replace it, or choose another --out")
    remove_stale_temporaries(p)
    return p


#: the lock file of a run directory in use (``fcntl.flock``: released by the kernel when the process dies)
LOCK_FILE = ".prefmatch.lock"
#: where ``--overwrite`` keeps the replaced run until the new one has finished (``.replaced-PID``)
REPLACED_PREFIX = ".replaced-"


def _main_rank() -> bool:
    """True on the process that owns the run directory (rank 0 of a launch, or a plain process)."""
    return os.environ.get("RANK", "0") in ("", "0")


class _RunLock:
    """An exclusive ``flock`` on ``out/.prefmatch.lock`` holding the owner's pid: a second run into the
    same directory is refused while the first one lives; a lock left by a dead process is free (the
    kernel drops it), whatever the file says."""

    def __init__(self, out: Path):
        self.path = out / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        for _ in range(20):  # the file may be unlinked by a finishing owner between open and flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    owner = os.read(fd, 64).decode(errors="replace").strip() or "?"
                finally:
                    os.close(fd)
                raise TrainingError(f"out: {self.path.parent} is in use by another run (pid {owner}, lock "
                                    f"{self.path}); wait for it to finish or choose another --out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self.fd = fd
                return
            os.close(fd)
        raise TrainingError(f"out: cannot lock {self.path} (it keeps being replaced)")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run: raised like Ctrl-C, so that the run's ``finally`` clauses (an
    ``--overwrite``'s old run brought back, the lock released) run before the process ends."""


def _raise_on_sigterm():
    """Turn SIGTERM into :class:`Terminated` until the returned function restores the old handler
    (main thread only: elsewhere signals cannot be handled, and nothing is changed)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise Terminated("terminated (SIGTERM)")

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def run_session(out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False):
    """The life of a command that writes a run into ``out``, around the training call.

    * :func:`claim_run_dir` checks the directory (a run there needs ``resume`` or ``overwrite``);
    * a lock refuses a second run into the same directory while this one lives;
    * ``overwrite`` moves the old run's files into ``out/.replaced-PID`` and brings them back if
      the new run fails (exception, Ctrl-C, SIGTERM): they are deleted only once the new run has
      finished;
    * a fresh directory that a failed command leaves empty is removed again.

    Only the main process of a launch (``RANK`` 0) locks and moves files."""
    existed = Path(out).exists()
    p = claim_run_dir(out, resume=resume, overwrite=overwrite)
    if not _main_rank():
        yield p
        return
    lock = _RunLock(p)
    lock.acquire()
    aside = None
    restore_term = _raise_on_sigterm()
    try:
        held = [m for m in RUN_MARKERS if (p / m).exists()]
        if held and overwrite and not resume:
            aside = p / f"{REPLACED_PREFIX}{os.getpid()}"
            aside.mkdir()
            for m in held:
                os.replace(p / m, aside / m)
            _fsync_dir(p)
        try:
            yield p
        except BaseException:
            if aside is not None:  # the new run failed: its files go, the old run comes back
                for m in RUN_MARKERS:
                    target = p / m
                    shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
                for m in os.listdir(aside):
                    os.replace(aside / m, p / m)
                aside.rmdir()
                aside = None
            raise
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    finally:
        restore_term()
        lock.release()
        if not existed:
            with contextlib.suppress(OSError):
                p.rmdir()  # only when empty: a refused or failed fresh run leaves nothing behind
