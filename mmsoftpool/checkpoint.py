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


def _allowed_global_names():
    names = set()
    for entry in SAFE_GLOBALS:
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f'{entry.__module__}.{entry.__qualname__}')
    return names


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
        reason = str(err).split('WeightsUnpickler error:')[-1].strip()
        try:
            refused = sorted(
                set(torch.serialization.get_unsafe_globals_in_checkpoint(
                    filename)) - _allowed_global_names())
        except Exception:  # unreadable beyond the pickle: say nothing more
            refused = []
        listed = (f' It refers to {", ".join(refused)}, which are not on '
                  'the allow-list.' if refused else '')
        raise pickle.UnpicklingError(
            f'Refused to load checkpoint {filename!r}: safe loading '
            '(torch.load with weights_only=True) allows only tensors, plain '
            'containers and the types listed in mmsoftpool/checkpoint.py, '
            f'and nothing in the file was executed.{listed} Reason: '
            f'{reason}\nDo not load this file with weights_only=False '
            'unless you trust where it comes from.') from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise RuntimeError(
            f'Cannot read checkpoint {filename!r} '
            f'({osp.getsize(filename)} bytes): the file is damaged, '
            f'truncated or not a torch.save file ({err})') from err


torch.serialization.add_safe_globals(SAFE_GLOBALS)
# Scheme '' is MMEngine's fallback for local paths; force=True replaces it.
CheckpointLoader.register_scheme(prefixes='', loader=load_from_local,
                                 force=True)
