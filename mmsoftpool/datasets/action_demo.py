"""A generated action-recognition dataset for the CPU video demo.

Each clip shows one square or triangle (random size, colour and place) on
dark noise redrawn every frame, doing one of four actions:

    moving_left   moving_right   growing   spinning

A single frame says nothing about the action: only the motion does, so a
recognizer has to pool over time as well as space. Clips are stored as frame
folders (rawframes), so no video decoder is needed; MMAction2's own
``RawframeDataset`` reads them::

    meta.json
    train_list.txt   train/moving_left_0001/img_00001.png ...
    val_list.txt     val/spinning_0016/img_00016.png ...

(each list line: ``frame_dir total_frames label``). The generator is
deterministic: the same arguments give the same PNG bytes. Its arguments
are recorded in ``meta.json``; ``DemoActionsDataset`` (MMAction2's DATASETS,
where it is installed) makes the data on first use and checks it after, as
the image demos' datasets do (:mod:`.demo`).
"""
import json
import math
import os
import os.path as osp
from typing import Dict

import numpy as np

from ..optional import is_installed
from .demo import (
    SPLITS,
    _add_noise,
    _background,
    _bright_colour,
    _check_counts,
    _ensure,
    _fill,
    _given,
    _outline,
    _write_folder,
    _write_image,
)

ACTION_CLASSES = ('moving_left', 'moving_right', 'growing', 'spinning')
ACTION_VERSION = 1
ACTION_ARGS = ('num_train_per_class', 'num_val_per_class', 'num_frames',
               'frame_size', 'seed')
FILENAME_TMPL = 'img_{:05}.png'
_ACTION_ROOT = 'data/demo_video'  # DemoActionsDataset's default root
_SPLIT_SEEDS = {'train': 0, 'val': 1}
_MIN_FRAMES = 8
_MIN_FRAME_SIZE = 32
# Circumradius as a fraction of the frame size.
_MOVING_RADIUS = (0.12, 0.17)
_GROWING_RADIUS = (0.10, 0.14)  # at the start; it ends 2 to 2.6 times larger
_GROWTH = (2.0, 2.6)
_SPINNING_RADIUS = (0.22, 0.32)
# Travel of a moving shape over the clip, as a fraction of the frame size.
_TRAVEL = (0.30, 0.45)
# Turn of a spinning shape over the clip: a half to a whole turn of a
# square's symmetry (90 degrees), either way.
_TURN = (0.5, 1.0)


def _clip(rng: np.random.Generator, action: str, num_frames: int,
          size: int) -> np.ndarray:
    """Frames (T, H, W, 3 uint8 BGR) of one clip of ``action``."""
    shape = ('square', 'triangle')[rng.integers(2)]
    colour = _bright_colour(rng, 0, (0, 180))
    background = _background(rng, size)
    angle = rng.uniform(0, 2 * math.pi)
    progress = np.linspace(0.0, 1.0, num_frames)
    if action in ('moving_left', 'moving_right'):
        radius = np.full(num_frames, rng.uniform(*_MOVING_RADIUS) * size)
        travel = rng.uniform(*_TRAVEL) * size
        start = rng.uniform(radius[0] + 1, size - 2 - radius[0] - travel)
        x = start + travel * progress
        if action == 'moving_left':
            x = x[::-1]
        y = np.full(num_frames, rng.uniform(radius[0] + 1,
                                            size - 2 - radius[0]))
        angles = np.full(num_frames, angle)
    elif action == 'growing':
        start = rng.uniform(*_GROWING_RADIUS) * size
        radius = start * (1 + (rng.uniform(*_GROWTH) - 1) * progress)
        x, y = (np.full(num_frames, c) for c in rng.uniform(
            radius[-1] + 1, size - 2 - radius[-1], size=2))
        angles = np.full(num_frames, angle)
    else:  # spinning
        radius = np.full(num_frames, rng.uniform(*_SPINNING_RADIUS) * size)
        x, y = (np.full(num_frames, c) for c in rng.uniform(
            radius[0] + 1, size - 2 - radius[0], size=2))
        turn = rng.uniform(*_TURN) * (math.pi / 2) * rng.choice((-1, 1))
        angles = angle + turn * progress
    frames = []
    for t in range(num_frames):
        image = background.copy()
        _fill(image,
              _outline(shape, np.array([x[t], y[t]]), radius[t], angles[t]),
              colour)
        frames.append(_add_noise(rng, image))
    return np.stack(frames)


def _action_args(num_train_per_class, num_val_per_class, num_frames,
                 frame_size, seed) -> dict:
    return dict(
        version=ACTION_VERSION,
        classes=list(ACTION_CLASSES),
        num_train_per_class=num_train_per_class,
        num_val_per_class=num_val_per_class,
        num_frames=num_frames,
        frame_size=frame_size,
        seed=seed)


def generate_action_demo(root: str,
                         num_train_per_class: int = 100,
                         num_val_per_class: int = 25,
                         num_frames: int = 16,
                         frame_size: int = 32,
                         seed: int = 0) -> None:
    """Write the action dataset to ``root``, which must not exist yet."""
    _check_counts(
        num_train_per_class=num_train_per_class,
        num_val_per_class=num_val_per_class,
        num_frames=num_frames,
        frame_size=frame_size)
    if num_frames < _MIN_FRAMES:
        raise ValueError(f'num_frames must be at least {_MIN_FRAMES}, got '
                         f'num_frames={num_frames}')
    if frame_size < _MIN_FRAME_SIZE:
        raise ValueError(f'frame_size must be at least {_MIN_FRAME_SIZE}, '
                         f'got frame_size={frame_size}')
    args = _action_args(num_train_per_class, num_val_per_class, num_frames,
                        frame_size, seed)

    def write(folder):
        for split, count in zip(SPLITS,
                                (num_train_per_class, num_val_per_class)):
            rng = np.random.default_rng([seed, _SPLIT_SEEDS[split]])
            lines = []
            # Interleaved by class, so that the list is not sorted by label.
            for index in range(1, count + 1):
                for label, action in enumerate(ACTION_CLASSES):
                    clip_dir = f'{split}/{action}_{index:04d}'
                    os.makedirs(osp.join(folder, clip_dir))
                    frames = _clip(rng, action, num_frames, frame_size)
                    for t, frame in enumerate(frames, start=1):
                        _write_image(
                            osp.join(folder, clip_dir,
                                     FILENAME_TMPL.format(t)), frame)
                    lines.append(f'{clip_dir} {num_frames} {label}\n')
            with open(osp.join(folder, f'{split}_list.txt'), 'w') as f:
                f.writelines(lines)
        with open(osp.join(folder, 'meta.json'), 'w') as f:
            json.dump(dict(generator=args), f, indent=1)

    _write_folder(root, write, 'generate_action_demo')


def ensure_action_demo(root: str,
                       num_train_per_class: int = 100,
                       num_val_per_class: int = 25,
                       num_frames: int = 16,
                       frame_size: int = 32,
                       seed: int = 0) -> Dict[str, str]:
    """Generate the action dataset on first use; check an existing one
    matches. Returns the paths of the two clip lists."""
    _ensure(
        root, lambda: generate_action_demo(root, num_train_per_class,
                                           num_val_per_class, num_frames,
                                           frame_size, seed),
        _action_args(num_train_per_class, num_val_per_class, num_frames,
                     frame_size, seed), {'meta.json': ('generator', )},
        'action demo dataset')
    return {split: osp.join(root, f'{split}_list.txt') for split in SPLITS}


if is_installed('mmaction'):
    from mmaction.datasets import RawframeDataset
    from mmaction.registry import DATASETS as ACTION_DATASETS

    @ACTION_DATASETS.register_module()
    class DemoActionsDataset(RawframeDataset):
        """The generated action clips, read by MMAction2's
        ``RawframeDataset``, made under ``root`` on first use and checked
        after (:func:`ensure_action_demo`).

        Args:
            root (str): folder of the generated dataset.
            split (str): ``'train'`` or ``'val'``.
            num_train_per_class, num_val_per_class, num_frames, frame_size,
                seed: the generator's arguments (its defaults where not
                given); an existing ``root`` must have been made with the
                same ones.
            **kwargs: those of ``RawframeDataset`` (``pipeline``,
                ``test_mode``, ...), except the paths and file names.
        """

        def __init__(self,
                     root: str = _ACTION_ROOT,
                     split: str = 'train',
                     **kwargs):
            if split not in SPLITS:
                raise ValueError(f'DemoActionsDataset: split must be one of '
                                 f'{SPLITS}, got split={split!r}')
            given = sorted({'ann_file', 'data_root', 'data_prefix',
                            'filename_tmpl'} & set(kwargs))
            if given:
                raise TypeError(f'DemoActionsDataset: the paths follow from '
                                f'root and split; {given} cannot be given')
            lists = self.generate_if_missing(dict(kwargs, root=root))
            for name in ACTION_ARGS:
                kwargs.pop(name, None)
            super().__init__(
                ann_file=lists[split],
                data_prefix=dict(img=root),
                filename_tmpl=FILENAME_TMPL,
                **kwargs)

        @staticmethod
        def generate_if_missing(dataset_cfg: dict) -> Dict[str, str]:
            """Generate the data when ``root`` is missing, check it when it
            is there; returns the clip lists."""
            return ensure_action_demo(
                dataset_cfg.get('root', _ACTION_ROOT),
                **_given(dataset_cfg, ACTION_ARGS))
