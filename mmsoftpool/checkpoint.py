"""Safe loading of the checkpoints MMEngine writes, with ``weights_only=True``.

Since torch 2.6, ``torch.load`` only unpickles tensors, containers and the
globals on an allow-list. A checkpoint saved by MMEngine's ``Runner`` also
holds the ``message_hub``: ``HistoryBuffer`` objects made of numpy arrays,
scalars and dtypes. Importing this module (``import mmsoftpool`` does, and so
does ``custom_imports=dict(imports=['mmsoftpool'])``) adds exactly those types
to torch's allow-list, so every ``torch.load`` in the process (MMEngine's
``load_checkpoint``, ``Runner.resume``, ``load_from``, ``init_cfg`` Pretrained)
reads such checkpoints while still refusing everything else.

One global cannot be allowed as is: ``HistoryBuffer.__getstate__`` stores its
statistics functions, which pickle writes as ``builtins.getattr(HistoryBuffer,
'min')``. Allowing ``getattr`` would hand any attribute of any allowed object
to a malicious file, so that name is mapped to
:func:`_history_buffer_statistic`, which returns only those four functions.

It also replaces MMEngine's loader for local paths by one that always passes
``weights_only=True`` (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn it off)
and names the file when a checkpoint is refused or cannot be read.
See docs/checkpoints.md.
"""
import inspect
import os.path as osp
import pickle
import re

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

# The functions HistoryBuffer._set_default_statistics registers.
_HISTORY_BUFFER_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})


def _history_buffer_statistic(owner, name):
    """Stand-in for ``builtins.getattr`` while unpickling with
    ``weights_only=True``: resolves ``HistoryBuffer.<statistic>`` and refuses
    anything else."""
    if owner is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refused getattr({owner!r}, {name!r}): the only getattr calls a '
        'checkpoint may contain are HistoryBuffer statistics '
        f'({", ".join(sorted(_HISTORY_BUFFER_STATISTICS))})')


def _numpy_globals():
    """The numpy functions and types that pickled arrays, scalars and dtypes
    refer to, under numpy 2's names and numpy 1's (older checkpoints)."""
    reconstruct = np._core.multiarray._reconstruct
    scalar = np._core.multiarray.scalar
    dtype_classes = [
        cls for _, cls in inspect.getmembers(np.dtypes, inspect.isclass)
        if issubclass(cls, np.dtype)
    ]
    return [
        reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes,
        (reconstruct, 'numpy.core.multiarray._reconstruct'),
        (scalar, 'numpy.core.multiarray.scalar'),
    ]


SAFE_GLOBALS = [
    HistoryBuffer,
    (_history_buffer_statistic, 'builtins.getattr'),
    *_numpy_globals(),
]


# How torch's weights-only unpickler (and _history_buffer_statistic) words a
# refusal; any other unpickling error means the data itself is damaged.
_REFUSAL = re.compile(
    r'GLOBAL \S+ was not an allowed global|whose module \S+ is blocked|'
    r'call reduce for unrecognized function|Can only create new object|'
    r'Can only build|refused getattr')


def load_from_local(filename, map_location):
    """MMEngine's loader for local paths (``CheckpointLoader`` scheme ''),
    with ``weights_only=True`` explicit and errors that name the file."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename!r} does not exist')
    try:
        return torch.load(
            filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message around the reason advises weights_only=False
        refusal = [line.split('WeightsUnpickler error:')[-1].strip()
                   for line in str(err).splitlines() if _REFUSAL.search(line)]
        if not refusal:
            raise _damaged(filename, f'UnpicklingError: {err}') from None
        reason = refusal[0]
        raise pickle.UnpicklingError(
            f'Refused to load checkpoint {filename!r}: it holds objects that '
            'safe loading (torch.load with weights_only=True) does not '
            'allow, and nothing in it was executed. Allowed are tensors, '
            'plain containers and the types listed in '
            f'mmsoftpool/checkpoint.py. Reason: {reason}\n'
            'Do not load this file with weights_only=False unless you trust '
            'where it comes from.') from None
    except Exception as err:  # damaged data fails in many ways in torch.load
        raise _damaged(filename, f'{type(err).__name__}: {err}') from err


def _damaged(filename, reason):
    return RuntimeError(
        f'Cannot read checkpoint {filename!r} ({osp.getsize(filename)} '
        f'bytes): the file is damaged, truncated or not a torch.save file '
        f'({reason})')


torch.serialization.add_safe_globals(SAFE_GLOBALS)
# Scheme '' is MMEngine's fallback for local paths; force=True replaces it.
CheckpointLoader.register_scheme(prefixes='', loader=load_from_local,
                                 force=True)
