"""The ``mmsoftpool`` registry scope: what configs inheriting ours resolve in.

MMEngine gives every dict with a ``type`` in a base config loaded as
``mmsoftpool::...`` the key ``_scope_='mmsoftpool'`` (unless it already has
one), and then builds it in the registries of that scope, which it finds by
importing ``mmsoftpool.registry``. A registry has one parent, so one family
of configs can rely on this scope:

- detection (``configs/retinanet``, ``configs/mask_rcnn``, ``configs/demo``):
  the registries below are children of mmdet's, so a dataset, transform,
  loop or metric a detection config defines resolves as in mmdet;
- classification (``configs/pretrain``): the dicts these configs define
  themselves carry ``_scope_='mmpretrain'``; the rest comes from
  ``mmpretrain::`` bases, which MMEngine scopes to mmpretrain.
"""
from mmdet import registry as mmdet_registry
from mmengine.registry import Registry


def _child_of(parent: Registry) -> Registry:
    # importing the package registers everything the project adds
    return Registry(
        parent.name, parent=parent, scope='mmsoftpool', locations=['mmsoftpool'])


RUNNERS = _child_of(mmdet_registry.RUNNERS)
RUNNER_CONSTRUCTORS = _child_of(mmdet_registry.RUNNER_CONSTRUCTORS)
LOOPS = _child_of(mmdet_registry.LOOPS)
HOOKS = _child_of(mmdet_registry.HOOKS)
DATASETS = _child_of(mmdet_registry.DATASETS)
DATA_SAMPLERS = _child_of(mmdet_registry.DATA_SAMPLERS)
TRANSFORMS = _child_of(mmdet_registry.TRANSFORMS)
MODELS = _child_of(mmdet_registry.MODELS)
MODEL_WRAPPERS = _child_of(mmdet_registry.MODEL_WRAPPERS)
WEIGHT_INITIALIZERS = _child_of(mmdet_registry.WEIGHT_INITIALIZERS)
OPTIMIZERS = _child_of(mmdet_registry.OPTIMIZERS)
OPTIM_WRAPPERS = _child_of(mmdet_registry.OPTIM_WRAPPERS)
OPTIM_WRAPPER_CONSTRUCTORS = _child_of(
    mmdet_registry.OPTIM_WRAPPER_CONSTRUCTORS)
PARAM_SCHEDULERS = _child_of(mmdet_registry.PARAM_SCHEDULERS)
METRICS = _child_of(mmdet_registry.METRICS)
EVALUATOR = _child_of(mmdet_registry.EVALUATOR)
TASK_UTILS = _child_of(mmdet_registry.TASK_UTILS)
VISUALIZERS = _child_of(mmdet_registry.VISUALIZERS)
VISBACKENDS = _child_of(mmdet_registry.VISBACKENDS)
LOG_PROCESSORS = _child_of(mmdet_registry.LOG_PROCESSORS)
