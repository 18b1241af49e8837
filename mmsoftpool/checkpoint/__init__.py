"""Safe loading of checkpoints: ``weights_only=True`` on every loading path.

Since torch 2.6, ``torch.load`` only unpickles tensors, containers and the
globals on an allow-list. A checkpoint saved by MMEngine's ``Runner`` also
holds the ``message_hub`` (``HistoryBuffer`` objects made of numpy arrays) and
numpy scalars and arrays (logged values, the RNG state). Importing this
package (``import mmsoftpool`` does, and so does
``custom_imports=dict(imports=['mmsoftpool'])``) does two things:

1. It puts *checked stand-ins* on torch's allow-list under the names those
   checkpoints use (:mod:`.allow_list`).
2. It registers a loader with ``weights_only=True`` for every scheme of
   MMEngine's ``CheckpointLoader`` (:mod:`.schemes`), each ending in
   :func:`load` (:mod:`.loading`), which checks the file
   (:mod:`mmsoftpool.checkpoint_bounds`) before torch reads it.

It also stops MMEngine's inferencers from building a model from a config
stored in a checkpoint. Refused and damaged files raise errors that name the
file or URL. See docs/checkpoints.md for the threat model.
"""
import torch
from mmengine.infer import BaseInferencer
from mmengine.runner.checkpoint import CheckpointLoader

from .allow_list import SAFE_GLOBALS, is_plain_dtype
from .loading import CHECKPOINT_ERRORS, DamagedCheckpoint, RefusedCheckpoint, load
from .schemes import (
    SCHEMES,
    _no_config_from_checkpoint,
    load_from_ceph,
    load_from_http,
    load_from_local,
    load_from_mmcls,
    load_from_openmmlab,
    load_from_pavi,
    load_from_torchvision,
    load_from_work_dir,
)

__all__ = [
    'load', 'RefusedCheckpoint', 'DamagedCheckpoint', 'CHECKPOINT_ERRORS',
    'is_plain_dtype', 'SAFE_GLOBALS', 'SCHEMES', 'load_from_local',
    'load_from_http', 'load_from_torchvision', 'load_from_openmmlab',
    'load_from_mmcls', 'load_from_pavi', 'load_from_ceph',
    'load_from_work_dir'
]

BaseInferencer._init_model = _no_config_from_checkpoint(
    BaseInferencer._init_model)
torch.serialization.add_safe_globals(SAFE_GLOBALS)
for _prefixes, _loader in SCHEMES.items():
    CheckpointLoader.register_scheme(prefixes=_prefixes, loader=_loader,
                                     force=True)
