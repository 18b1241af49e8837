"""A small generated ImageFolder-style dataset of shapes, for classification
on CPU.

Each image shows one filled circle, square or triangle (random size, position,
rotation and colour) on a noisy background; its class is the shape. The
shapes are those of the detection demo (:mod:`.demo`), one per image, but
their hue is drawn from the whole range: colour says nothing about the class.
The generator is deterministic: the same arguments give the same PNG bytes.

Layout under ``root`` (what MMPretrain's ``CustomDataset`` reads)::

    meta.json                      the generator's arguments
    train/circle/000001.png ...    train/square/...    train/triangle/...
    val/circle/000001.png ...      val/square/...      val/triangle/...

:class:`DemoShapesDataset` (registered in MMPretrain's DATASETS) generates the
data on first use, so a config that names it trains with nothing prepared.
"""
import json
import math
import os
import os.path as osp
import shutil
import tempfile

import cv2
import numpy as np
from mmpretrain.datasets import CustomDataset
from mmpretrain.registry import DATASETS

from .demo import DEMO_CLASSES, _outline

# Bump when the drawing changes, so that data made by an older generator is
# recognised as such instead of being mixed with new expectations.
GENERATOR_VERSION = 1
SPLITS = ('train', 'val')
_SPLIT_SEEDS = {'train': 0, 'val': 1}
# Circumradius as a fraction of the image size: shapes fill most of the
# image, so that they survive ResNet's 4x downsampling stem on 32x32 images
# (smaller ones made the demo learn several times slower).
_RADIUS_RANGE = (0.32, 0.44)
_FIXED_POINT_SHIFT = 4  # cv2.fillPoly draws with 1/16 pixel precision
_MIN_IMAGE_SIZE = 32  # leaves room to move the largest shape


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f'{name} must be a positive int, got {name}={value!r}')


def _random_colour(rng: np.random.Generator) -> tuple:
    """A saturated, bright BGR colour of any hue."""
    hsv = [
        rng.integers(0, 180),
        rng.integers(150, 256),
        rng.integers(150, 256)
    ]
    pixel = np.array([[hsv]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0])


def _draw_image(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """One image (H, W, 3 uint8 BGR) showing ``shape``."""
    image = np.full((size, size, 3), rng.integers(0, 100), dtype=np.float64)
    radius = rng.uniform(*_RADIUS_RANGE) * size
    center = rng.uniform(radius + 1, size - 2 - radius, size=2)
    vertices = _outline(shape, center, radius, rng.uniform(0, 2 * math.pi))
    fixed = np.round(vertices * (1 << _FIXED_POINT_SHIFT)).astype(np.int32)
    cv2.fillPoly(image, [fixed], _random_colour(rng), cv2.LINE_8,
                 _FIXED_POINT_SHIFT)
    image += rng.normal(0, 20, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _generator_args(num_train_per_class, num_val_per_class, image_size,
                    seed) -> dict:
    return dict(
        version=GENERATOR_VERSION,
        classes=list(DEMO_CLASSES),
        num_train_per_class=num_train_per_class,
        num_val_per_class=num_val_per_class,
        image_size=image_size,
        seed=seed)


def generate_classification_demo(root: str,
                                 num_train_per_class: int = 100,
                                 num_val_per_class: int = 30,
                                 image_size: int = 32,
                                 seed: int = 0) -> None:
    """Write the dataset to ``root``, which must not exist yet.

    Files are written to a temporary folder beside ``root`` and moved into
    place at the end, so an interrupted run leaves no half-made dataset.
    """
    for name, value in (('num_train_per_class', num_train_per_class),
                        ('num_val_per_class',
                         num_val_per_class), ('image_size', image_size)):
        _check_count(name, value)
    if image_size < _MIN_IMAGE_SIZE:
        raise ValueError(f'image_size must be at least {_MIN_IMAGE_SIZE}, '
                         f'got image_size={image_size}')
    if osp.exists(root):
        raise FileExistsError(
            f'generate_classification_demo: {root} exists already')
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    args = _generator_args(num_train_per_class, num_val_per_class, image_size,
                           seed)
    counts = {'train': num_train_per_class, 'val': num_val_per_class}
    tmp = tempfile.mkdtemp(prefix=osp.basename(root) + '.tmp-', dir=parent)
    try:
        for split in SPLITS:
            rng = np.random.default_rng([seed, _SPLIT_SEEDS[split]])
            for shape in DEMO_CLASSES:
                folder = osp.join(tmp, split, shape)
                os.makedirs(folder)
                for index in range(1, counts[split] + 1):
                    path = osp.join(folder, f'{index:06d}.png')
                    if not cv2.imwrite(path, _draw_image(
                            rng, shape, image_size)):
                        raise OSError(f'could not write {path}')
        with open(osp.join(tmp, 'meta.json'), 'w') as f:
            json.dump(dict(generator=args), f, indent=1)
        try:
            os.rename(tmp, root)
        except OSError:
            if osp.isdir(root):  # made by another process meanwhile
                raise FileExistsError(
                    f'generate_classification_demo: {root} exists already')
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_classification_demo(root: str,
                               num_train_per_class: int = 100,
                               num_val_per_class: int = 30,
                               image_size: int = 32,
                               seed: int = 0) -> None:
    """Generate the dataset on first use; check an existing one matches.

    A folder at ``root`` made with other arguments (or by another generator
    version, or not by this generator at all) is an error, never silently
    reused or overwritten.
    """
    wanted = _generator_args(num_train_per_class, num_val_per_class,
                             image_size, seed)
    if not osp.exists(root):
        print(f'[demo] generating the classification demo dataset under '
              f'{root}')
        try:
            generate_classification_demo(root, num_train_per_class,
                                         num_val_per_class, image_size, seed)
            return
        except FileExistsError:
            pass  # another process (e.g. a second rank) made it meanwhile
    meta_file = osp.join(root, 'meta.json')
    if not osp.isfile(meta_file):
        raise FileNotFoundError(
            f'{root} exists but has no {meta_file}; it is not a generated '
            'classification demo dataset. Remove it or choose another root.')
    with open(meta_file) as f:
        found = json.load(f).get('generator')
    if found != wanted:
        raise ValueError(
            f'{root} was generated with {found}, but {wanted} was asked '
            f'for. Remove {root} to regenerate it, or choose another root.')


@DATASETS.register_module()
class DemoShapesDataset(CustomDataset):
    """The generated shapes, read by MMPretrain's ``CustomDataset``.

    The data is generated under ``root`` on first use (see
    :func:`ensure_classification_demo`); class indices follow the sorted
    folder names, as in any ImageFolder-style dataset.

    Args:
        root (str): folder of the generated dataset.
        split (str): ``'train'`` or ``'val'``.
        num_train_per_class, num_val_per_class, image_size, seed: the
            generator's arguments; an existing ``root`` must have been made
            with the same ones.
        **kwargs: those of :class:`mmpretrain.datasets.CustomDataset`
            (``pipeline``, ``test_mode``, ...), except the paths.
    """

    def __init__(self,
                 root: str = 'data/demo_cls',
                 split: str = 'train',
                 num_train_per_class: int = 100,
                 num_val_per_class: int = 30,
                 image_size: int = 32,
                 seed: int = 0,
                 **kwargs):
        if split not in SPLITS:
            raise ValueError(f'DemoShapesDataset: split must be one of '
                             f'{SPLITS}, got split={split!r}')
        given = sorted({'data_root', 'data_prefix', 'ann_file'} & set(kwargs))
        if given:
            raise TypeError(f'DemoShapesDataset: the paths follow from root '
                            f'and split; {given} cannot be given')
        ensure_classification_demo(root, num_train_per_class,
                                   num_val_per_class, image_size, seed)
        super().__init__(
            data_root=root, data_prefix=split, with_label=True, **kwargs)
