"""Safe loading of checkpoints: ``weights_only=True`` on every loading path.

Since torch 2.6, ``torch.load`` only unpickles tensors, containers and the
globals on an allow-list. A checkpoint saved by MMEngine's ``Runner`` also
holds the ``message_hub`` (``HistoryBuffer`` objects made of numpy arrays) and
numpy scalars and arrays (logged values, the RNG state). Importing this module
(``import mmsoftpool`` does, and so does
``custom_imports=dict(imports=['mmsoftpool'])``) does two things:

1. It puts *checked stand-ins* on torch's allow-list under the names those
   checkpoints use. The real numpy functions and ``HistoryBuffer.__setstate__``
   are not safe on data from a file: a forged dtype state makes numpy read
   file bytes as object pointers, a sub-array dtype can claim more memory than
   its buffer holds, and ``HistoryBuffer.__setstate__`` writes into the
   class-wide table of statistics functions. The stand-ins accept only numpy
   arrays, scalars and dtypes of plain numeric and bool kinds (judged by the
   dtype's kind, fields and sub-array, never by its flags), with buffers of
   exactly their declared size, and build a ``HistoryBuffer`` without touching
   class state. ``builtins.getattr`` (how pickle writes the statistics
   functions) resolves only ``HistoryBuffer.min/max/current/mean``.
2. It registers a loader with ``weights_only=True`` for every scheme of
   MMEngine's ``CheckpointLoader`` (local paths, ``http(s)://``,
   ``torchvision://``, ``open-mmlab://``, ``mmcls://``, ``pavi://``,
   ``s3://`` ...). MMEngine's own loaders for URLs end in torch.hub's
   ``load_state_dict_from_url``, whose ``weights_only`` default is ``False``,
   and the others call ``torch.load`` with its default, which
   ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns off. An explicit
   ``weights_only=True`` cannot be turned off by any environment variable.

Refused and damaged files raise errors that name the file or URL. See
docs/checkpoints.md for the threat model.
"""
import contextlib
import functools
import io
import logging
import math
import os
import os.path as osp
import pickle
import re
from collections import OrderedDict
from tempfile import TemporaryDirectory
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.fileio import get_file_backend
from mmengine.infer import BaseInferencer
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner.checkpoint import (CheckpointLoader,
                                        _get_mmengine_home,
                                        _process_mmcls_checkpoint,
                                        get_deprecated_model_names,
                                        get_external_models,
                                        get_mmcls_models,
                                        get_torchvision_models)

from . import checkpoint_bounds as bounds
from .checkpoint_bounds import FileDamaged, FileRefused, check_checkpoint

# ---------------------------------------------------------------------------
# Checked stand-ins for the globals MMEngine's checkpoints refer to. Each
# raises pickle.UnpicklingError('refused ...') for anything else, which
# torch reports as a refusal.


class RefusedCheckpoint(pickle.UnpicklingError):
    """A checkpoint holds something safe loading does not allow; nothing in
    it was executed."""


class DamagedCheckpoint(RuntimeError):
    """A checkpoint that cannot be read: damaged, truncated, not a torch.save
    file, or larger in memory than its size allows."""


# What loading a checkpoint raises for a bad file (the tools report these
# as user errors, in one line).
CHECKPOINT_ERRORS = (RefusedCheckpoint, DamagedCheckpoint, FileNotFoundError)


def _refuse(what):
    return pickle.UnpicklingError(f'refused {what}')


# The functions HistoryBuffer._set_default_statistics registers.
_HISTORY_BUFFER_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})

# numpy dtype strings of plain numeric and bool kinds: b1, i1..i8, u1..u8,
# f2..f16, c8..c32. Everything else (objects, strings, void, structured,
# sub-array, datetime) is refused.
_PLAIN_DTYPE = re.compile(r'[biufc][0-9]{1,2}')


def is_plain_dtype(dtype: np.dtype) -> bool:
    """Whether safe loading admits arrays and scalars of ``dtype``."""
    return (dtype.fields is None and dtype.subdtype is None
            and _PLAIN_DTYPE.fullmatch(dtype.str[1:]) is not None)


class _PickledDtype:
    """Stand-in for ``numpy.dtype`` while unpickling.

    Pickle rebuilds a dtype as ``numpy.dtype(spec, align, copy)`` followed by
    ``__setstate__(state)``; numpy's own ``__setstate__`` trusts the state
    (its flags, fields, sub-array and size). This class keeps the spec,
    checks the state, and hands the array and scalar stand-ins a dtype built
    from the spec alone. It is not a dtype itself: a dtype stored on its own
    in a checkpoint comes back as this object (MMEngine stores none).
    """

    def __init__(self, spec, align=False, copy=True):
        if not (isinstance(spec, str) and _PLAIN_DTYPE.fullmatch(spec)):
            raise _refuse(f'numpy dtype {spec!r}: only plain numeric and bool '
                          'dtypes may be loaded')
        dtype = np.dtype(spec)
        if dtype.str[1:] != spec or not is_plain_dtype(dtype):
            raise _refuse(f'numpy dtype {spec!r}: not a plain dtype')
        self.dtype = dtype

    def __setstate__(self, state):
        _build_once(self, 'numpy dtype')
        # (version, byteorder, subarray, names, fields, elsize, alignment,
        #  flags[, metadata]); flags are numpy's to derive, not the file's.
        if not (isinstance(state, tuple) and len(state) in (8, 9)
                and state[0] in (3, 4)):
            raise _refuse(f'numpy dtype state {state!r}')
        byteorder, subarray, names, fields, elsize, alignment = state[1:7]
        metadata = state[8] if len(state) == 9 else None
        if (byteorder not in ('<', '>', '=', '|') or subarray is not None
                or names is not None or fields is not None
                or elsize not in (-1, self.dtype.itemsize)
                or alignment not in (-1, self.dtype.alignment)
                or metadata is not None):
            raise _refuse(f'numpy dtype {self.dtype.str!r} with state '
                          f'{state!r}: only plain numeric and bool dtypes '
                          '(no fields, sub-array, size or metadata) may be '
                          'loaded')
        if byteorder in '<>':
            self.dtype = self.dtype.newbyteorder(byteorder)


def _build_once(stand_in, what):
    """Refuse a second BUILD of an object the pickle fetched again from its
    memo: each stand-in takes its state exactly once."""
    if stand_in.__dict__.get('_built'):
        raise _refuse(f'a second state for the same {what}')
    stand_in.__dict__['_built'] = True


def _plain_dtype(dtype):
    if not isinstance(dtype, _PickledDtype):
        raise _refuse(f'{dtype!r} as a numpy dtype')
    return dtype.dtype


def _checked_buffer(data, size, what):
    if not isinstance(data, (bytes, bytearray)) or len(data) != size:
        length = len(data) if isinstance(data, (bytes, bytearray)) else None
        raise _refuse(f'{what}: its data is {type(data).__name__} of length '
                      f'{length}, the dtype and shape declare {size} bytes')
    return data


class _LoadedArray(np.ndarray):
    """What a pickled ``numpy.ndarray`` is rebuilt as while unpickling.

    Its ``__setstate__`` checks the dtype, shape and buffer before numpy's own
    runs. :func:`load` turns these back into plain ``ndarray`` views.
    """

    def __new__(cls, *args, **kwargs):
        # a file may name numpy.ndarray as a class to instantiate: refuse
        raise _refuse('creating a numpy array other than by pickle\'s '
                      '_reconstruct')

    def __setstate__(self, state):
        # numpy's __setstate__ frees the buffer that views of the array
        # (taken by an earlier BUILD's state) still point into
        _build_once(self, 'numpy array')
        if not (isinstance(state, tuple) and len(state) == 5
                and state[0] == 1):
            raise _refuse('numpy array state of an unknown form')
        _, shape, dtype, fortran_order, data = state
        dtype = _plain_dtype(dtype)
        if not (isinstance(shape, tuple) and len(shape) <= 32 and all(
                type(n) is int and n >= 0 for n in shape)):
            raise _refuse(f'numpy array shape {shape!r}')
        if type(fortran_order) is not bool:
            raise _refuse(f'numpy array order flag {fortran_order!r}')
        size = dtype.itemsize
        for n in shape:
            size *= n
        _checked_buffer(data, size, f'numpy array {dtype.str} {shape}')
        super().__setstate__((1, shape, dtype, fortran_order, data))

    def __reduce_ex__(self, protocol):  # saved again: a plain array
        return np.asarray(self).__reduce_ex__(protocol)


def _reconstruct_array(cls, shape, typecode):
    """Stand-in for ``numpy._core.multiarray._reconstruct``."""
    if cls is not _LoadedArray or shape != (0, ) or typecode != b'b':
        raise _refuse(f'_reconstruct({cls!r}, {shape!r}, {typecode!r})')
    return np.ndarray.__new__(_LoadedArray, (0, ), np.uint8)


def _rebuild_scalar(dtype, data):
    """Stand-in for ``numpy._core.multiarray.scalar``."""
    dtype = _plain_dtype(dtype)
    _checked_buffer(data, dtype.itemsize, f'numpy scalar {dtype.str}')
    return np._core.multiarray.scalar(dtype, data)


def _empty_bytes(*args):
    """Stand-in for ``builtins.bytes``: pickle protocol 2 writes the empty
    buffer of an empty array as ``bytes()`` (others as ``_codecs.encode``)."""
    if args:
        raise _refuse(f'bytes{args!r}: only bytes() may be called')
    return b''


class _LoadedHistoryBuffer(HistoryBuffer):
    """What a pickled ``HistoryBuffer`` is rebuilt as while unpickling.

    ``HistoryBuffer.__setstate__`` updates the class-wide table of statistics
    functions with the file's. This one checks the state (the statistics may
    only be HistoryBuffer's own, each under its own name), sets the instance's
    attributes and then becomes a plain ``HistoryBuffer``.
    """

    _STATE = frozenset({'max_length', '_log_history', '_count_history'})

    def __setstate__(self, state):
        # Built once: it then becomes a HistoryBuffer, which torch refuses
        # to BUILD (not on the allow-list).
        if not isinstance(state, dict):
            raise _refuse('HistoryBuffer state that is not a dict')
        state = dict(state)
        methods = state.pop('statistics_methods', {})
        if set(state) != self._STATE:
            raise _refuse(f'HistoryBuffer state with keys {sorted(state)}')
        if not isinstance(methods, dict) or any(
                name not in _HISTORY_BUFFER_STATISTICS
                or method is not getattr(HistoryBuffer, name)
                for name, method in methods.items()):
            raise _refuse('HistoryBuffer statistics other than its own '
                          f'min, max, current and mean: {methods!r}')
        if type(state['max_length']) is not int or state['max_length'] < 1:
            raise _refuse(f'HistoryBuffer max_length {state["max_length"]!r}')
        for key in ('_log_history', '_count_history'):
            if not (isinstance(state[key], _LoadedArray)
                    and state[key].ndim == 1):
                raise _refuse(f'HistoryBuffer {key} that is not a 1-D array')
            # a copy: the file may rebuild that array again (refused, but
            # the buffer must not depend on it)
            state[key] = np.array(state[key], copy=True)
        self.__dict__.update(state)
        self.__class__ = HistoryBuffer
        # what HistoryBuffer.__init__ does: the defaults, if still missing
        HistoryBuffer._set_default_statistics(self)


def _history_buffer_statistic(owner, name):
    """Stand-in for ``builtins.getattr``: resolves ``HistoryBuffer.<statistic>``
    and refuses anything else."""
    if owner is _LoadedHistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    shown = HistoryBuffer if owner is _LoadedHistoryBuffer else owner
    raise _refuse(
        f'getattr({shown!r}, {name!r}): the only getattr calls a checkpoint '
        'may contain are HistoryBuffer statistics '
        f'({", ".join(sorted(_HISTORY_BUFFER_STATISTICS))})')


# Name in the pickle -> what it is rebuilt with. numpy 1 wrote
# numpy.core.multiarray, numpy 2 writes numpy._core.multiarray.
SAFE_GLOBALS = [
    (_LoadedHistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
    (_history_buffer_statistic, 'builtins.getattr'),
    (_PickledDtype, 'numpy.dtype'),
    (_LoadedArray, 'numpy.ndarray'),
    (_reconstruct_array, 'numpy._core.multiarray._reconstruct'),
    (_reconstruct_array, 'numpy.core.multiarray._reconstruct'),
    (_rebuild_scalar, 'numpy._core.multiarray.scalar'),
    (_rebuild_scalar, 'numpy.core.multiarray.scalar'),
    (_empty_bytes, 'builtins.bytes'),
]
_OWN_NAMES = {name for _, name in SAFE_GLOBALS}


def _check_allow_list():
    """Refuse to load if other code allow-listed the real objects under our
    names (or any numpy global): torch would then pick one of the two."""
    foreign = []
    for entry in torch.serialization.get_safe_globals():
        if isinstance(entry, tuple):
            if entry in SAFE_GLOBALS:
                continue
            name = entry[1]
        else:
            name = f'{entry.__module__}.{entry.__qualname__}'
        if name in _OWN_NAMES or name.startswith('numpy.'):
            foreign.append(name)
    if foreign:
        raise RuntimeError(
            'mmsoftpool: torch.serialization.add_safe_globals was called with '
            f'{sorted(foreign)}, which bypasses the checks of '
            'mmsoftpool.checkpoint; remove those entries '
            '(torch.serialization.clear_safe_globals() and re-import) to '
            'load checkpoints safely')


# ---------------------------------------------------------------------------
# Loading with weights_only=True and errors that name the source.

# How torch's weights-only unpickler and the stand-ins word a refusal; any
# other unpickling error means the data itself is damaged.
_REFUSAL = re.compile(
    r'GLOBAL \S+ was not an allowed global|whose module \S+ is blocked|'
    r'call reduce for unrecognized function|Can only create new object|'
    r'Can only build|refused ')


def _plain_arrays(obj, seen):
    """Replaces the checked arrays in the containers of a loaded checkpoint
    by plain ``ndarray`` views, in place."""
    if isinstance(obj, _LoadedArray):
        return np.array(obj, copy=True)  # a plain ndarray owning its data
    if id(obj) in seen or not isinstance(obj, (dict, list, tuple)):
        return obj
    seen.add(id(obj))
    if isinstance(obj, dict):
        for key, value in obj.items():
            obj[key] = _plain_arrays(value, seen)
    elif isinstance(obj, list):
        obj[:] = [_plain_arrays(value, seen) for value in obj]
    else:
        items = tuple(_plain_arrays(value, seen) for value in obj)
        if any(new is not old for new, old in zip(items, obj)):
            obj = items
    return obj


def load(source, name=None, map_location=None):
    """``torch.load(source, weights_only=True)`` with the checked allow-list.

    ``source`` is a path or a binary file object; ``name`` (default: the
    path) is how errors refer to it, e.g. the URL it came from. The file is
    first checked by :func:`mmsoftpool.checkpoint_bounds.check_checkpoint`
    (what it may allocate, how its archive is laid out) and torch then reads
    the same open file.
    """
    name = source if name is None else name
    _check_allow_list()
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
        except pickle.UnpicklingError as err:
            # torch's message around the reason advises weights_only=False
            refusal = [
                line.split('WeightsUnpickler error:')[-1].strip()
                for line in str(err).splitlines() if _REFUSAL.search(line)
            ]
            if not refusal:
                raise _damaged(name, size,
                               f'UnpicklingError: {err}') from None
            raise _refused(name, refusal[0]) from None
        except Exception as err:  # damaged data fails in many ways in torch
            raise _damaged(name, size,
                           f'{type(err).__name__}: {err}') from err
    return _plain_arrays(checkpoint, set())


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


def _storage_from_bytes(data):
    """Stand-in for ``torch.storage._load_from_bytes`` (how plain pickle
    writes a tensor's storage), which would call ``torch.load`` with
    ``weights_only=False``."""
    return load(io.BytesIO(data), 'a tensor storage inside a pickle')


def _latin1_bytes(text, encoding):
    """Stand-in for ``_codecs.encode``: how protocol 2 writes bytes."""
    if not isinstance(text, str) or encoding != 'latin1':
        raise _refuse(f'_codecs.encode(..., {encoding!r})')
    return text.encode('latin1')


def _over_literals(container):
    """``container`` (OrderedDict, torch.Size) built only from the pickle's
    own lists, tuples and dicts: over a tensor it would make one object per
    element of a view as large as the file asks."""

    def build(*args):
        if not all(isinstance(a, (list, tuple, dict)) for a in args):
            raise _refuse(f'{container.__name__} of '
                          f'{", ".join(type(a).__name__ for a in args)}')
        return container(*args)

    return build


# What plain pickles of results (MMEngine's DumpResults, tools/test.py --out)
# hold: tensors, ordered dicts, numpy values. No HistoryBuffer, no getattr.
_PICKLE_GLOBALS = {
    'torch.storage._load_from_bytes': _storage_from_bytes,
    'collections.OrderedDict': _over_literals(OrderedDict),
    'torch.Size': _over_literals(torch.Size),
    '_codecs.encode': _latin1_bytes,
    **{name: obj for obj, name in SAFE_GLOBALS
       if name.startswith('numpy.') or name == 'builtins.bytes'},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Python's recipe for restricting globals, with the list above; the
    tensors a file rebuilds may add up to what a checkpoint of its size may
    hold (mmsoftpool.checkpoint_bounds)."""

    def __init__(self, f, size):
        super().__init__(f)
        self.tensor_bytes_left = bounds.TENSOR_BYTES_PER_FILE_BYTE * size + \
            bounds.TENSOR_BYTES_SLACK

    def find_class(self, module, name):
        if f'{module}.{name}' == 'torch._utils._rebuild_tensor_v2':
            return self._rebuild_tensor
        if f'{module}.{name}' in _PICKLE_GLOBALS:
            return _PICKLE_GLOBALS[f'{module}.{name}']
        raise _refuse(f'global {module}.{name}')

    def _rebuild_tensor(self, storage, offset, size, stride, *args):
        if not isinstance(storage, torch.storage.TypedStorage) or not all(
                isinstance(v, (tuple, list)) and all(type(n) is int for n in v)
                for v in (size, stride)) or min(size, default=0) < 0:
            raise _refuse(f'a tensor of {type(storage).__name__}, size '
                          f'{size!r}, stride {stride!r}')
        self.tensor_bytes_left -= math.prod(size) * storage.element_size()
        if self.tensor_bytes_left < 0:
            raise _refuse('tensors that add up to more than '
                          f'{bounds.TENSOR_BYTES_PER_FILE_BYTE} times the '
                          'file\'s size')
        return torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
                                               *args)


def load_pickle(path):
    """Reads a plain pickle of results (tensors, containers, numpy values)
    without running code from it; errors name the file."""
    with open(path, 'rb') as f:
        data = f.read()
    try:
        unpickler = _RestrictedUnpickler(io.BytesIO(data), len(data))
        return _plain_arrays(unpickler.load(), set())
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            f'Refused to load {path!r}: {err}; plain pickles of results '
            'may hold only tensors, containers and numpy values') from None


# ---------------------------------------------------------------------------
# A loader for every scheme MMEngine 0.10.7's CheckpointLoader registers, as
# MMEngine's (same prefixes, same name tables), ending in load() above.


def load_from_local(filename, map_location=None):
    """Scheme '' (local paths)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename!r} does not exist')
    return load(filename, map_location=map_location)


def _cached_download(url, model_dir, progress):
    """The file torch.hub's load_state_dict_from_url would load: the cached
    copy under ``$TORCH_HOME/hub/checkpoints``, downloaded if absent."""
    if model_dir is None:
        model_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached_file = osp.join(model_dir, osp.basename(urlparse(url).path))
    if not osp.exists(cached_file):
        print_log(f'Downloading {url} to {cached_file}', logger='current')
        try:
            torch.hub.download_url_to_file(url, cached_file, progress=progress)
        except OSError as err:  # urllib's URLError, HTTPError, a timeout
            # FileNotFoundError: one of CHECKPOINT_ERRORS, for the tools
            raise FileNotFoundError(
                f'cannot download checkpoint {url!r}: '
                f'{getattr(err, "reason", None) or err}') from None
    return cached_file


def load_from_http(filename, map_location=None, model_dir=None,
                   progress=os.isatty(0)):
    """Schemes ``http://``, ``https://``; local rank 0 downloads first."""

    def fetch():
        cached_file = _cached_download(filename, model_dir, progress)
        return load(cached_file, f'{filename} (cached as {cached_file})',
                    map_location)

    rank, world_size = get_dist_info()
    if rank == 0:
        checkpoint = fetch()
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = fetch()
    return checkpoint


def _model_url(table, scheme, model_name):
    if model_name not in table:
        raise FileNotFoundError(  # one of CHECKPOINT_ERRORS, for the tools
            f'{scheme}{model_name}: no such model in MMEngine\'s table for '
            f'{scheme} (known: {len(table)} names, e.g. {sorted(table)[:5]})')
    return table[model_name]


def load_from_torchvision(filename, map_location=None):
    """Schemes ``torchvision://``, ``modelzoo://`` (deprecated)."""
    scheme, model_name = filename.split('://', 1)
    if scheme == 'modelzoo':
        print_log('The URL scheme of "modelzoo://" is deprecated, please use '
                  '"torchvision://" instead', logger='current',
                  level=logging.WARNING)
    url = _model_url(get_torchvision_models(), f'{scheme}://', model_name)
    return load_from_http(url, map_location=map_location)


def load_from_openmmlab(filename, map_location=None):
    """Schemes ``open-mmlab://``, ``openmmlab://``."""
    scheme, model_name = filename.split('://', 1)
    deprecated = get_deprecated_model_names()
    if model_name in deprecated:
        print_log(f'{scheme}://{model_name} is deprecated in favor of '
                  f'{scheme}://{deprecated[model_name]}', logger='current',
                  level=logging.WARNING)
        model_name = deprecated[model_name]
    url = _model_url(get_external_models(), f'{scheme}://', model_name)
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location=map_location)
    return load_from_local(
        osp.join(_get_mmengine_home(), url), map_location=map_location)


def load_from_mmcls(filename, map_location=None):
    """Scheme ``mmcls://``."""
    url = _model_url(get_mmcls_models(), 'mmcls://', filename[len('mmcls://'):])
    return _process_mmcls_checkpoint(
        load_from_http(url, map_location=map_location))


def load_from_pavi(filename, map_location=None):
    """Scheme ``pavi://``."""
    try:
        from pavi import modelcloud
    except ImportError:
        raise ImportError(
            'Please install pavi to load checkpoint from modelcloud.')
    model = modelcloud.get(filename[len('pavi://'):])
    with TemporaryDirectory() as tmp_dir:
        downloaded_file = osp.join(tmp_dir, model.name)
        model.download(downloaded_file)
        return load(downloaded_file, filename, map_location)


def load_from_ceph(filename, map_location=None, backend='petrel'):
    """Schemes ``s3://``, ``petrel://`` (optionally ``name:s3://``)."""
    file_backend = get_file_backend(
        filename, backend_args={'backend': backend})
    with io.BytesIO(file_backend.get(filename)) as buffer:
        return load(buffer, filename, map_location)


def load_from_work_dir(filename, map_location=None):
    """Scheme ``work_dir://FOLDER``: the newest whole checkpoint a training
    run wrote to FOLDER (what ``last_checkpoint`` names, or the one before a
    damaged one), so one run can start from another's result without
    naming its last epoch."""
    from mmsoftpool.engine.resume import find_resumable_checkpoint
    folder = filename[len('work_dir://'):]
    found = find_resumable_checkpoint(folder)
    for damaged, reason in found.skipped:
        print_log(f'{filename}: skipping damaged checkpoint {damaged!r}: '
                  f'{reason}', logger='current', level=logging.WARNING)
    if found.path is None:
        raise FileNotFoundError(
            f'{filename}: {found.reason}; run the training that writes it '
            'first')
    print_log(f'{filename}: {found.describe()}', logger='current')
    path = found.path
    return load_from_local(path, map_location=map_location)


SCHEMES = OrderedDict([
    ('', load_from_local),
    (('http://', 'https://'), load_from_http),
    (('modelzoo://', 'torchvision://'), load_from_torchvision),
    (('open-mmlab://', 'openmmlab://'), load_from_openmmlab),
    ('mmcls://', load_from_mmcls),
    ('pavi://', load_from_pavi),
    ((r'(\S+\:)?s3://', r'(\S+\:)?petrel://'), load_from_ceph),
    ('work_dir://', load_from_work_dir),
])

def _no_config_from_checkpoint(init_model):
    """MMEngine's ``BaseInferencer`` without a config (``DetInferencer(
    model=None, weights=FILE)``) builds one from the checkpoint's
    ``message_hub.runtime_info.cfg`` with ``Config.fromstring``, which runs
    it as Python: code from the file. Refuse that; the config comes from
    the user."""

    @functools.wraps(init_model)
    def checked(self, cfg, weights, device='cpu'):
        if not cfg and weights is not None:
            raise RefusedCheckpoint(
                f'{type(self).__name__}(model=None, weights={weights!r}): '
                'building the model from the config stored in a checkpoint '
                'runs that config as Python (MMEngine\'s Config.fromstring); '
                'pass the config file as model= (see docs/checkpoints.md)')
        return init_model(self, cfg, weights, device)

    return checked


BaseInferencer._init_model = _no_config_from_checkpoint(
    BaseInferencer._init_model)
torch.serialization.add_safe_globals(SAFE_GLOBALS)
for _prefixes, _loader in SCHEMES.items():
    CheckpointLoader.register_scheme(prefixes=_prefixes, loader=_loader,
                                     force=True)
