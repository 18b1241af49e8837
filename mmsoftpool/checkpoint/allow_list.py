"""Checked stand-ins for the globals MMEngine's checkpoints refer to.

The real numpy functions and ``HistoryBuffer.__setstate__`` are not safe on
data from a file: a forged dtype state makes numpy read file bytes as object
pointers, a sub-array dtype can claim more memory than its buffer holds, and
``HistoryBuffer.__setstate__`` writes into the class-wide table of statistics
functions. The stand-ins accept only numpy arrays, scalars and dtypes of plain
numeric and bool kinds (judged by the dtype's kind, fields and sub-array,
never by its flags), with buffers of exactly their declared size, and build a
``HistoryBuffer`` without touching class state. ``builtins.getattr`` (how
pickle writes the statistics functions) resolves only
``HistoryBuffer.min/max/current/mean``.

:data:`SAFE_GLOBALS` maps the names in the pickle to them; the package puts
it on torch's allow-list when imported. Each stand-in raises a
:class:`StandInRefusal` for anything else, which torch reports as its own
``UnpicklingError`` with the stand-in's error chained to it.
"""
import pickle
import re

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


class StandInRefusal(pickle.UnpicklingError):
    """A stand-in refused what the file asks for. Its type, not its wording,
    is how :func:`mmsoftpool.checkpoint.load` tells it from torch's errors."""


def refuse(what):
    """The error a stand-in raises for ``what``."""
    return StandInRefusal(f'refused {what}')


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
            raise refuse(f'numpy dtype {spec!r}: only plain numeric and bool '
                         'dtypes may be loaded')
        dtype = np.dtype(spec)
        if dtype.str[1:] != spec or not is_plain_dtype(dtype):
            raise refuse(f'numpy dtype {spec!r}: not a plain dtype')
        self.dtype = dtype

    def __setstate__(self, state):
        _build_once(self, 'numpy dtype')
        # (version, byteorder, subarray, names, fields, elsize, alignment,
        #  flags[, metadata]); flags are numpy's to derive, not the file's.
        if not (isinstance(state, tuple) and len(state) in (8, 9)
                and state[0] in (3, 4)):
            raise refuse(f'numpy dtype state {state!r}')
        byteorder, subarray, names, fields, elsize, alignment = state[1:7]
        metadata = state[8] if len(state) == 9 else None
        if (byteorder not in ('<', '>', '=', '|') or subarray is not None
                or names is not None or fields is not None
                or elsize not in (-1, self.dtype.itemsize)
                or alignment not in (-1, self.dtype.alignment)
                or metadata is not None):
            raise refuse(f'numpy dtype {self.dtype.str!r} with state '
                         f'{state!r}: only plain numeric and bool dtypes '
                         '(no fields, sub-array, size or metadata) may be '
                         'loaded')
        if byteorder in '<>':
            self.dtype = self.dtype.newbyteorder(byteorder)


def _build_once(stand_in, what):
    """Refuse a second BUILD of an object the pickle fetched again from its
    memo: each stand-in takes its state exactly once."""
    if stand_in.__dict__.get('_built'):
        raise refuse(f'a second state for the same {what}')
    stand_in.__dict__['_built'] = True


def _plain_dtype(dtype):
    if not isinstance(dtype, _PickledDtype):
        raise refuse(f'{dtype!r} as a numpy dtype')
    return dtype.dtype


def _checked_buffer(data, size, what):
    if not isinstance(data, (bytes, bytearray)) or len(data) != size:
        length = len(data) if isinstance(data, (bytes, bytearray)) else None
        raise refuse(f'{what}: its data is {type(data).__name__} of length '
                     f'{length}, the dtype and shape declare {size} bytes')
    return data


class _LoadedArray(np.ndarray):
    """What a pickled ``numpy.ndarray`` is rebuilt as while unpickling.

    Its ``__setstate__`` checks the dtype, shape and buffer before numpy's own
    runs. :func:`plain_arrays` turns these back into plain ``ndarray`` views.
    """

    def __new__(cls, *args, **kwargs):
        # a file may name numpy.ndarray as a class to instantiate: refuse
        raise refuse('creating a numpy array other than by pickle\'s '
                     '_reconstruct')

    def __setstate__(self, state):
        # numpy's __setstate__ frees the buffer that views of the array
        # (taken by an earlier BUILD's state) still point into
        _build_once(self, 'numpy array')
        if not (isinstance(state, tuple) and len(state) == 5
                and state[0] == 1):
            raise refuse('numpy array state of an unknown form')
        _, shape, dtype, fortran_order, data = state
        dtype = _plain_dtype(dtype)
        if not (isinstance(shape, tuple) and len(shape) <= 32 and all(
                type(n) is int and n >= 0 for n in shape)):
            raise refuse(f'numpy array shape {shape!r}')
        if type(fortran_order) is not bool:
            raise refuse(f'numpy array order flag {fortran_order!r}')
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
        raise refuse(f'_reconstruct({cls!r}, {shape!r}, {typecode!r})')
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
        raise refuse(f'bytes{args!r}: only bytes() may be called')
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
            raise refuse('HistoryBuffer state that is not a dict')
        state = dict(state)
        methods = state.pop('statistics_methods', {})
        if set(state) != self._STATE:
            raise refuse(f'HistoryBuffer state with keys {sorted(state)}')
        if not isinstance(methods, dict) or any(
                name not in _HISTORY_BUFFER_STATISTICS
                or method is not getattr(HistoryBuffer, name)
                for name, method in methods.items()):
            raise refuse('HistoryBuffer statistics other than its own '
                         f'min, max, current and mean: {methods!r}')
        if type(state['max_length']) is not int or state['max_length'] < 1:
            raise refuse(f'HistoryBuffer max_length {state["max_length"]!r}')
        for key in ('_log_history', '_count_history'):
            if not (isinstance(state[key], _LoadedArray)
                    and state[key].ndim == 1):
                raise refuse(f'HistoryBuffer {key} that is not a 1-D array')
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
    raise refuse(
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


def check_allow_list():
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


def plain_arrays(obj, seen=None):
    """Replaces the checked arrays in the containers of a loaded checkpoint
    by plain ``ndarray`` views, in place."""
    seen = set() if seen is None else seen
    if isinstance(obj, _LoadedArray):
        return np.array(obj, copy=True)  # a plain ndarray owning its data
    if id(obj) in seen or not isinstance(obj, (dict, list, tuple)):
        return obj
    seen.add(id(obj))
    if isinstance(obj, dict):
        for key, value in obj.items():
            obj[key] = plain_arrays(value, seen)
    elif isinstance(obj, list):
        obj[:] = [plain_arrays(value, seen) for value in obj]
    else:
        items = tuple(plain_arrays(value, seen) for value in obj)
        if any(new is not old for new, old in zip(items, obj)):
            obj = items
    return obj
