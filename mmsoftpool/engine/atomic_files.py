"""Crash-safe writes of checkpoints: a file appears whole or not at all.

MMEngine's ``LocalBackend.put`` opens the final path with ``'wb'`` and
writes into it: a crash (or a full disk) leaves a truncated checkpoint under
the name ``--resume`` will pick. :func:`write_atomically` writes a temporary
file in the same folder, flushes and fsyncs it, renames it over the final
name (atomic on POSIX within one file system) and fsyncs the folder, so the
rename survives a power cut. :class:`AtomicLocalBackend` is MMEngine's local
backend with its writes done so; it is registered as ``'atomic_local'``
(``backend_args=dict(backend='atomic_local')``).
"""
import os
import os.path as osp

from mmengine.fileio import LocalBackend, register_backend


def temporary_name(path: str) -> str:
    """Where ``path`` is written before it is renamed into place; a crash
    leaves at most this one file, which the next write replaces."""
    folder, name = osp.split(path)
    return osp.join(folder, f'.{name}.tmp')


def write_atomically(path: str, data: bytes) -> None:
    path = str(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = temporary_name(path)
    try:
        with open(temporary, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if osp.exists(temporary):
            os.remove(temporary)
        raise
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)  # the rename itself
    finally:
        os.close(handle)


@register_backend('atomic_local')
class AtomicLocalBackend(LocalBackend):
    """MMEngine's local backend; ``put`` and ``put_text`` write atomically."""

    def put(self, obj: bytes, filepath) -> None:
        write_atomically(filepath, obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        write_atomically(filepath, obj.encode(encoding))
