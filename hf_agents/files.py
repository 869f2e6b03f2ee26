"""Writing files so that a reader never sees half of one, and hashing them.

Every file the library writes goes through `atomic_write` (a temp file beside it, then a rename); a folder
through `atomic_dir`. `train_results.json` is written by `write_train_results` for every stage. What they
write gets the mode a plain `open()` would give (0o666 less the umask), also when the writer inside made its
file with `tempfile` (mode 0o600, e.g. safetensors' `save_file`); `follow_umask` does the same for a folder
that other libraries wrote (a Trainer's output_dir).

A writer holds `output_lock(OUTPUT)` while it writes, so a second writer of the same output fails at once
naming the first; `check_file_target` refuses to write a file over what is not its own kind; `describe_os_error`
turns a disk error (read-only, full, no permission) into one line naming the path and the fix. A library's save
(torch.save, safetensors, `save_pretrained`) runs inside `saving(PATH)`, which turns its failed write (a
RuntimeError naming no errno or path) into that disk error and removes what it left half-written.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path


def umask() -> int:
    """The process's umask (read without changing it where /proc tells it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(current)
    return current


def _plain_mode(path: Path) -> None:
    os.chmod(path, 0o666 & ~umask())


def follow_umask(folder) -> None:
    """Give the files under `folder` that a writer made private through `tempfile` (mode 0o600, as safetensors'
    `save_file` does) the mode a plain `open()` gives (0o666 less the umask); other files are left alone."""
    folder = Path(folder)
    if (0o666 & ~umask()) == 0o600 or not folder.is_dir():
        return
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 == 0o600:
            _plain_mode(path)


@contextmanager
def atomic_path(path):
    """Yield a temp path beside `path` (same suffix) for a writer to fill; it becomes `path` when the block ends
    without an error, and is removed otherwise. The file gets the mode a plain `open()` would give, whatever
    the writer made it with. A disk error naming the temp file (or no file) names `path` instead."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        _plain_mode(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if e.errno is None or e.filename2 is not None or e.filename not in (None, str(tmp), tmp):
            raise
        raise type(e)(e.errno, e.strerror, str(path)) from e
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path, data: str | bytes) -> Path:
    """Write `data` to `path` through a temp file in the same folder and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data) if isinstance(data, bytes) else tmp.write_text(data)
    return Path(path)


def atomic_write_json(path, obj, indent: int = 2) -> Path:
    """`obj` as JSON (anything else as its str), written atomically."""
    return atomic_write(path, json.dumps(obj, indent=indent, default=str))


@contextmanager
def atomic_dir(path):
    """Yield a temp folder beside `path`; on success it replaces `path` whole (a kill leaves the old one)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    follow_umask(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def sha256_file(path) -> str:
    """sha256 hex digest of one file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_train_results(out_dir, metrics: dict, **extra) -> Path:
    """out_dir/train_results.json: the stage's final metrics, then `extra` (config, log_history, ...)."""
    return atomic_write_json(Path(out_dir) / "train_results.json", {"metrics": metrics, **extra})


# -- one writer per output ----------------------------------------------------------------------------------------


class OutputBusyError(FileExistsError):
    """Another process holds the lock of the output this one was about to write."""


_HELD: dict[Path, list[int]] = {}  # lock file -> [its descriptor, times taken] (a nested take is free)


def lock_file(output) -> Path:
    """The lock file of `output`: `.NAME.lock` beside it (the output itself may not exist yet)."""
    output = Path(os.path.abspath(output))
    return output.with_name(f".{output.name}.lock")


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "a process that is starting"
    except OSError:
        return "another process"


def _take(path: Path, output: Path) -> int:
    """Open and flock `path` (fails at once when held); retried when the file was replaced meanwhile."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusyError(f"{output}: another run is writing it ({_holder(path)}); wait for it to finish or "
                                  f"choose another output") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:  # not unlinked by a holder releasing it meanwhile
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


class OutputLock:
    """An exclusive lock on one output (a dataset, a training run's output_dir, a file), taken at once or refused
    with `OutputBusyError` naming the holder. The kernel releases it when the process ends, killed or not."""

    def __init__(self, output):
        self.output, self.path, self.taken = Path(output), lock_file(output), False

    def acquire(self) -> OutputLock:
        if self.taken:
            return self
        if self.path in _HELD:
            _HELD[self.path][1] += 1
        else:
            _HELD[self.path] = [self._open(), 1]
        self.taken = True
        return self

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = _take(self.path, self.output)
        except OutputBusyError:
            raise
        except OSError as e:  # a read-only or full disk: name the output, not its lock file
            raise type(e)(e.errno, e.strerror, str(self.output)) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}".encode())
        except OSError:  # a full disk: let the error name it, holding and leaving nothing
            self.path.unlink(missing_ok=True)
            os.close(fd)
            raise
        return fd

    def release(self) -> None:
        if not self.taken:
            return
        self.taken = False
        held = _HELD[self.path]
        held[1] -= 1
        if held[1]:
            return
        import fcntl

        del _HELD[self.path]
        self.path.unlink(missing_ok=True)  # while still held: a waiting writer then retries on a fresh file
        fcntl.flock(held[0], fcntl.LOCK_UN)
        os.close(held[0])

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def output_lock(output) -> OutputLock:
    """`with output_lock(path):` while writing `path`; see `OutputLock`."""
    return OutputLock(output)


# -- what an output may replace ------------------------------------------------------------------------------------


def check_file_target(path, overwrite: bool, kind: str, is_kind=None, flag: str = "--out") -> Path:
    """Refuse to write the file `path` over a folder, over any file unless `overwrite`, and over a file that is not
    a `kind` (`is_kind(path)` false: a database, a dataset's table, a model's weights, ...) even then."""
    path = Path(path)
    if path.is_dir():
        raise FileExistsError(f"{flag} {path}: is a folder; give a {kind} file path")
    if not path.exists():
        return path
    if not overwrite:
        raise FileExistsError(f"{flag} {path}: already exists; pass --overwrite to replace it or choose a new path")
    if is_kind is not None and not is_kind(path):
        raise FileExistsError(f"{flag} {path}: exists and is not a {kind}; --overwrite only replaces a {kind}, so "
                              "nothing was changed; choose another path")
    return path


def is_png(path) -> bool:
    """A PNG image file (by its signature)."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False


# -- disk and OS errors --------------------------------------------------------------------------------------------

_FIXES = {errno.EROFS: "the file system is read-only; write somewhere else",
          errno.ENOSPC: "the disk is full; free space or write somewhere else",
          errno.EDQUOT: "the disk quota is used up; free space or write somewhere else",
          errno.EACCES: "permission denied; write somewhere you may write, or fix the permissions",
          errno.EPERM: "operation not permitted; write somewhere you may write, or fix the permissions",
          errno.ENOTDIR: "a file stands where a folder is needed; choose another path",
          errno.EISDIR: "a folder stands where a file is needed; choose another path"}


def is_disk_error(error: BaseException) -> bool:
    """An OS error about the disk or the path itself (not one of ours, which carry their own message)."""
    return isinstance(error, OSError) and error.errno is not None


def describe_os_error(error: OSError, fallback=None) -> str:
    """One line: the path (`fallback` when the error names none) and the cause, with the fix
    (`PATH: the disk is full; free space or write somewhere else (ENOSPC)`); of two paths (a copy's source and
    destination), the second, where it was writing."""
    where = next((name for name in (error.filename2, error.filename) if name is not None), fallback or "the output")
    cause = _FIXES.get(error.errno) or f"{error.strerror or error}"
    return f"{where}: {cause} ({errno.errorcode.get(error.errno, error.errno)})"


def error_message(error: BaseException, fallback=None) -> str:
    """The one line a command prints for `error`: a disk or OS error names the path (`fallback` when it names none)
    and the fix; the library's own errors carry their message."""
    text = describe_os_error(error, fallback) if is_disk_error(error) else str(error)
    return " ".join(text.split()) if "\n" in text else text


@contextmanager
def writing_folder(path):
    """While a writer fills the folder `path`: hold its lock, and when the writer fails, remove the folder if it
    was not there before (a full disk leaves no half-written output behind)."""
    path = Path(path)
    with output_lock(path):
        existed = path.exists()
        try:
            yield path
        except BaseException:
            if not existed:
                shutil.rmtree(path, ignore_errors=True)
            raise


# -- a library's failed write --------------------------------------------------------------------------------------

_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # safetensors (Rust): "I/O error: No space left on device (os error 28)"
_STRERROR = re.compile(r"strerror: ([^\n]+)")  # torch: "open file failed with strerror: Read-only file system"
_WRITE_FAILED = ("file write failed", "failed writing file", "unexpected pos", "iostream error")  # torch.save, disk full


def write_failure(error: BaseException, path) -> OSError | None:
    """The OSError (naming `path`) that a library's failed write stands for, or None when `error` is not one.
    torch.save raises RuntimeError on a full disk (`PytorchStreamWriter failed writing file ...: file write failed`,
    `[enforce fail at inline_container.cc] . unexpected pos N vs M`, `basic_ios::clear: iostream error`) and on a
    file it cannot open (`... open file failed with strerror: Read-only file system`); safetensors raises
    SafetensorError (`I/O error: No space left on device (os error 28)`). Neither names the path, torch not the
    errno: a write of torch's that failed for no stated cause is taken for a full disk."""
    if not isinstance(error, RuntimeError) and type(error).__name__ != "SafetensorError":
        return None
    text, code = str(error), None
    if match := _OS_ERROR.search(text):
        code = int(match.group(1))
    elif match := _STRERROR.search(text):
        code = next((c for c in errno.errorcode if os.strerror(c) == match.group(1).strip()), None)
    elif isinstance(error, RuntimeError) and any(words in text for words in _WRITE_FAILED):
        code = errno.ENOSPC
    return None if code is None else OSError(code, os.strerror(code), str(path))


def _files_at(path: Path) -> dict[Path, tuple]:
    """The files at `path` (itself, or the files of the folder: not its subfolders) with what tells a rewrite."""
    files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else [path] if path.is_file() else []
    found = {}
    for file in files:
        try:
            st = file.stat()
        except OSError:
            continue
        found[file] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return found


@contextmanager
def saving(path, remove: bool = True):
    """Around a library's save into `path` (a file, or the folder it writes its files into): torch.save,
    safetensors' `save_file`, `save_pretrained`, a Trainer's `save_model` or `train`. Its failed write (a full or
    read-only disk) becomes the OSError it stands for naming `path` (`write_failure`), so a command prints one line
    (`PATH: the disk is full; ...`), not a traceback; an OSError passes as it is. Then, with `remove`, the files
    the save made or rewrote at `path` (a folder: its own files, not its subfolders') are removed, so none is left
    half-written looking whole; the files it did not touch stay. Any other error passes unchanged."""
    path = Path(path)
    existed = path.is_dir()
    before = _files_at(path) if remove else {}
    try:
        yield path
    except Exception as e:
        error = e if is_disk_error(e) else write_failure(e, path)
        if error is None:
            raise
        if remove:
            for file, seen in _files_at(path).items():
                if before.get(file) != seen:
                    try:
                        file.unlink()
                    except OSError:  # a read-only disk: there is nothing of the save's on it either
                        pass
            if not existed and path.is_dir():
                try:
                    path.rmdir()  # the save made the folder: it goes when nothing else is in it
                except OSError:
                    pass
        if error is e:
            raise
        raise error from e
