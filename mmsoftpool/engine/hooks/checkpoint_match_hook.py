import re

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner.checkpoint import find_latest_checkpoint

_SHOWN = 10  # keys listed per category; the rest are counted


def _listed(title: str, items: list) -> str:
    if not items:
        return ''
    shown = ', '.join(items[:_SHOWN])
    more = len(items) - _SHOWN
    more = f' ... and {more} more' if more > 0 else ''
    return f'\n  {title} ({len(items)}): {shown}{more}'


def compare_state_dicts(model_state: dict, checkpoint_state: dict) -> dict:
    """Keys of a model's state dict that a checkpoint lacks, keys it has that
    the model lacks, and keys present in both with other shapes.

    Like MMEngine's ``load_state_dict``, a ``module.`` prefix in the
    checkpoint is stripped and BatchNorm's ``num_batches_tracked`` is not
    required.
    """
    checkpoint_state = {
        re.sub(r'^module\.', '', key): value
        for key, value in checkpoint_state.items()
    }
    missing = [
        key for key in model_state if key not in checkpoint_state
        and not key.endswith('num_batches_tracked')
    ]
    unexpected = [key for key in checkpoint_state if key not in model_state]
    mismatched, matched = [], 0
    for key, value in model_state.items():
        if key not in checkpoint_state:
            continue
        shape = tuple(getattr(checkpoint_state[key], 'shape', ()))
        if shape == tuple(value.shape):
            matched += 1
        else:
            mismatched.append(
                f'{key} checkpoint {shape} model {tuple(value.shape)}')
    return dict(
        missing=missing,
        unexpected=unexpected,
        mismatched=mismatched,
        matched=matched)


class CheckpointMismatchError(RuntimeError):
    """A checkpoint that does not fit the model; the message lists the keys."""


@HOOKS.register_module()
class CheckpointMatchHook(Hook):
    """Refuse, before any weight is copied, a checkpoint that does not fit
    the model, listing the missing, unexpected and mismatched keys.

    - Resuming needs an exact match: otherwise the optimizer state does not
      fit the parameters and training fails later with a shape error from
      deep inside the optimizer.
    - ``load_from`` (fine-tuning, ``tools/test.py``) keeps MMEngine's
      non-strict loading, so a checkpoint with another number of classes
      still loads its backbone and neck, and MMEngine reports the head
      mismatch. Only a checkpoint of which no tensor fits the model (another
      architecture) is refused. With ``require_all=True`` (what
      ``tools/test.py`` sets unless ``--allow-partial``) every parameter and
      buffer of the model must come from the checkpoint: evaluating a model
      whose head stayed random gives meaningless figures.
    """

    priority = 'VERY_HIGH'

    def __init__(self, require_all: bool = False):
        self.require_all = require_all

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        state = checkpoint.get('state_dict', checkpoint)
        diff = compare_state_dicts(model.state_dict(), state)
        resuming = runner._resume
        if resuming:
            fits = not (diff['missing'] or diff['unexpected']
                        or diff['mismatched'])
            need = 'resuming needs every key and shape to match'
        elif self.require_all:
            fits = not (diff['missing'] or diff['mismatched'])
            need = ('every parameter of the model must come from the '
                    'checkpoint; tools/test.py --allow-partial evaluates it '
                    'anyway')
        else:
            fits = diff['matched'] > 0
            need = 'no tensor of it fits the model'
        if fits:
            return
        raise CheckpointMismatchError(
            f'Checkpoint {self._source(runner)} does not fit the model '
            f'{type(model).__name__} ({need}):' +
            _listed('missing keys', diff['missing']) +
            _listed('unexpected keys', diff['unexpected']) +
            _listed('shape mismatches', diff['mismatched']))

    @staticmethod
    def _source(runner) -> str:
        # The file Runner.load_or_resume loads: `load_from`, or with
        # `resume=True` and no `load_from` the latest one in `work_dir`.
        path = runner._load_from
        if path is None and runner._resume:
            path = find_latest_checkpoint(runner.work_dir)
        return repr(path) if path is not None else '(unknown path)'
