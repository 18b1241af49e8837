import random

import numpy as np
import torch
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def get_rng_state() -> dict:
    """The states of the random number generators training draws from."""
    state = dict(
        python=random.getstate(),
        numpy=np.random.get_state(legacy=False),
        torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore states returned by :func:`get_rng_state`."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Make a resumed training continue the random streams of the original.

    MMEngine's checkpoints hold no random number generator state and a resumed
    run is re-seeded, so data augmentation and anything else drawing random
    numbers takes other values than an uninterrupted run would. This hook

    - stores the Python, numpy, torch (and CUDA) generator states in every
      checkpoint, under ``checkpoint['rng_state']``;
    - restores them when training starts from a resumed checkpoint (not for
      ``load_from``, which starts a new training at iteration 0);
    - keeps validation from consuming random numbers of the training stream
      (states saved before ``val`` and restored after it), since a resumed run
      does not repeat the validation that followed the checkpoint.

    With an epoch-based loop, deterministic settings and one process, a
    training resumed at an epoch boundary then ends with the same weights as
    the uninterrupted one. In distributed training only rank 0 writes the
    checkpoint, so the states are not restored there (a warning says so).
    """

    priority = 'VERY_LOW'  # restore after every other before_train hook

    def __init__(self) -> None:
        self._loaded_state = None
        self._state_before_val = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded_state = checkpoint.get('rng_state')

    def before_train(self, runner) -> None:
        # Checkpoints are loaded before `before_train`; only a resumed run
        # starts past iteration 0.
        if runner.iter == 0:
            return
        if get_world_size() > 1:
            runner.logger.warning(
                'RNGStateHook: random states are not restored in distributed '
                'training; the resumed run is re-seeded.')
        elif self._loaded_state is None:
            runner.logger.warning(
                'RNGStateHook: the resumed checkpoint holds no random states '
                "('rng_state'); the resumed run is re-seeded and will not "
                'repeat the uninterrupted one exactly.')
        else:
            set_rng_state(self._loaded_state)
            runner.logger.info('RNGStateHook: random states restored from '
                               f'the checkpoint of iteration {runner.iter}.')
        self._loaded_state = None

    def before_val(self, runner) -> None:
        self._state_before_val = get_rng_state()

    def after_val(self, runner) -> None:
        if self._state_before_val is not None:
            set_rng_state(self._state_before_val)
            self._state_before_val = None
