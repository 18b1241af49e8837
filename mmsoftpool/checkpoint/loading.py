"""Loading with ``weights_only=True``, and errors that name the source.

:func:`load` is where every loading path of the package ends. A file it
cannot load raises :class:`RefusedCheckpoint` (it holds something safe
loading does not allow) or :class:`DamagedCheckpoint` (it cannot be read).
Which of the two is decided without reading torch's messages. Damage is
found before torch reads the file: ``check_checkpoint``
(:mod:`mmsoftpool.checkpoint_bounds`) runs the pickle over the opcodes of
torch's weights-only unpickler and checks the archive's layout and CRCs, so
an ``UnpicklingError`` from that unpickler afterwards is a refusal of what
a well-formed pickle asks. Its reason is named by what raised: a stand-in's
:class:`~mmsoftpool.checkpoint.allow_list.StandInRefusal` (torch re-raises
it as its own ``UnpicklingError``, with the stand-in's error chained), else
the globals ``torch.serialization.get_unsafe_globals_in_checkpoint`` lists,
else torch's own error (an operation it does not allow, such as a second
state for an object it may not build).
"""
import contextlib
import io
import os
import pickle
import pickletools
import zipfile

import torch

from ..checkpoint_bounds import FileDamaged, FileRefused, check_checkpoint
from .allow_list import StandInRefusal, check_allow_list, plain_arrays


class RefusedCheckpoint(pickle.UnpicklingError):
    """A checkpoint holds something safe loading does not allow; nothing in
    it was executed."""


class DamagedCheckpoint(RuntimeError):
    """A checkpoint that cannot be read: damaged, truncated, not a torch.save
    file, or larger in memory than its size allows."""


# What loading a checkpoint raises for a bad file (the tools report these
# as user errors, in one line).
CHECKPOINT_ERRORS = (RefusedCheckpoint, DamagedCheckpoint, FileNotFoundError)


def load(source, name=None, map_location=None):
    """``torch.load(source, weights_only=True)`` with the checked allow-list.

    ``source`` is a path or a binary file object; ``name`` (default: the
    path) is how errors refer to it, e.g. the URL it came from. The file is
    first checked by :func:`mmsoftpool.checkpoint_bounds.check_checkpoint`
    (what it may allocate, how its archive is laid out) and torch then reads
    the same open file.
    """
    name = source if name is None else name
    check_allow_list()
    with _opened(source, name) as (f, size):
        try:
            check_checkpoint(f, size)
        except FileRefused as err:
            raise _refused(name, str(err)) from None
        except FileDamaged as err:
            raise _damaged(name, size, str(err)) from None
        try:
            checkpoint = torch.load(
                f, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:  # the pickle is well-formed
            raise _refused(name, _refusal(err, f)) from None
        except Exception as err:  # damaged data fails in many ways in torch
            raise _damaged(name, size,
                           f'{type(err).__name__}: {err}') from err
    return plain_arrays(checkpoint)


def _chain(err):
    """``err``, then each error it was raised from or while handling."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _refusal(err, f):
    """Why torch's weights-only unpickler, failing with ``err`` on the file
    open as ``f``, refused it."""
    causes = list(_chain(err))
    for cause in causes:
        if isinstance(cause, StandInRefusal):
            return str(cause)
    unsafe = _unsafe_globals(f)
    if unsafe:
        return ('it names globals that are not on the allow-list: '
                f'{", ".join(sorted(unsafe))}')
    # torch's own error, without its wrapper (which advises
    # weights_only=False)
    inner = [e for e in causes if isinstance(e, pickle.UnpicklingError)][-1]
    return f'torch\'s weights-only unpickler refused it ({inner})'


def _unsafe_globals(f):
    """The globals of the checkpoint open as ``f`` that torch's weights-only
    unpickler does not allow (``get_unsafe_globals_in_checkpoint``), or []
    where they cannot be listed. That function reads the zip format only: a
    legacy file's pickle is handed to it as the ``data.pkl`` of an archive
    of its own."""
    try:
        f.seek(0)
        if f.read(4) != b'PK\x03\x04':  # how torch.load tells the formats
            f = _archive_of(_legacy_pickle(f))
        f.seek(0)
        return torch.serialization.get_unsafe_globals_in_checkpoint(f)
    except Exception:  # a damaged pickle or archive: nothing to list
        return []


def _legacy_pickle(f):
    """The pickle of the objects in a legacy (torch < 1.6) file: the fourth,
    after the magic number, the protocol and the system info."""
    f.seek(0)
    for _ in range(3):
        for _ in pickletools.genops(f):
            pass
    start = f.tell()
    for _ in pickletools.genops(f):
        pass
    end = f.tell()
    f.seek(start)
    return f.read(end - start)


def _archive_of(data_pkl):
    """A zip laid out as torch.save writes one, holding only ``data_pkl``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_STORED) as archive:
        archive.writestr('archive/data.pkl', data_pkl)
        archive.writestr('archive/version', '3\n')
    return buffer


@contextlib.contextmanager
def _opened(source, name):
    """``source`` (a path or a binary file object) open, and its size."""
    if isinstance(source, (str, os.PathLike)):
        try:
            f = open(source, 'rb')
        except IsADirectoryError:
            raise _damaged(name, None, 'it is a folder') from None
        with f:
            yield f, os.fstat(f.fileno()).st_size
    else:
        source.seek(0, os.SEEK_END)
        size = source.tell()
        source.seek(0)
        yield source, size


def _refused(name, reason):
    return RefusedCheckpoint(
        f'Refused to load checkpoint {name!r}: it holds objects that '
        'safe loading (torch.load with weights_only=True) does not '
        'allow, and nothing in it was executed. Allowed are tensors, '
        'plain containers, numpy arrays and scalars of numeric and bool '
        'dtypes and MMEngine\'s HistoryBuffer (see docs/checkpoints.md). '
        f'Reason: {" ".join(reason.split())}. If you trust where the file '
        'comes from, convert it once with '
        'tools/misc/convert_checkpoint.py IN OUT --trust.')


def _damaged(name, size, reason):
    size = f' ({size} bytes)' if size is not None else ''
    return DamagedCheckpoint(
        f'Cannot read checkpoint {name!r}{size}: the file is damaged, '
        f'truncated or not a torch.save file ({" ".join(reason.split())})')
