"""Generated datasets of shapes for the CPU demos: detection and
classification.

Images show filled circles, squares and triangles (random size, position and
rotation, a bright colour) on dark noise. Both generators are deterministic:
the same arguments give the same PNG bytes (and JSON).

- Detection (:func:`generate_demo_dataset`): up to 4 shapes an image, not
  overlapping, reddish, greenish and bluish by class (so that a small
  detector trained from scratch learns them in minutes). Each object has its
  polygon mask, box and mask area in COCO's format, so mmdet's
  ``CocoDataset`` and ``CocoMetric`` read it like any COCO subset::

      annotations/instances_train.json   annotations/instances_val.json
      train/000001.png ...               val/000001.png ...

- Classification (:func:`generate_classification_demo`): one shape an
  image, of any hue (colour says nothing about the class), in the
  ImageFolder layout MMPretrain's ``CustomDataset`` reads::

      meta.json   train/circle/000001.png ...   val/triangle/000001.png ...

Both record their generator's arguments (``info.generator`` of each
annotation file; ``meta.json``), and both datasets, ``DemoShapesCocoDataset``
(mmdet's DATASETS) and ``DemoShapesDataset`` (MMPretrain's, where it is
installed), make their data on first use and check it after (``ensure_*``):
a config that names them trains with nothing prepared, and a folder made with
other arguments is an error, never reused or overwritten.
"""
import json
import math
import os
import os.path as osp
import shutil
import tempfile
from typing import Callable, Dict

import cv2
import numpy as np
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from pycocotools import mask as mask_utils

from ..optional import is_installed

DEMO_CLASSES = ('circle', 'square', 'triangle')
SPLITS = ('train', 'val')
# Bump when a generator's drawing changes, so that data made by an older
# generator is recognised as such instead of being mixed with new
# expectations.
DETECTION_VERSION = 2
CLASSIFICATION_VERSION = 1
# The generator's arguments a dataset config may give (the rest go to the
# dataset class).
DETECTION_ARGS = ('num_train', 'num_val', 'image_size', 'seed')
CLASSIFICATION_ARGS = ('num_train_per_class', 'num_val_per_class',
                       'image_size', 'seed')

_SPLIT_SEEDS = {'train': 0, 'val': 1}
_FIXED_POINT_SHIFT = 4  # cv2.fillPoly draws with 1/16 pixel precision
_MAX_OBJECTS = 4
# Detection: circumradius in pixels. The smallest triangle's box (about
# 24x28) still overlaps RetinaNet's smallest anchor (32x32) with IoU > 0.5.
_RADIUS_RANGE = (16.0, 32.0)
_HUES = dict(circle=0, square=60, triangle=120)  # OpenCV hue, 0..179
_HUE_JITTER = 15
_GAP = 2.0  # pixels kept free between the circumcircles of two objects
# Classification: circumradius as a fraction of the image size. Shapes fill
# most of the image, so that they survive ResNet's 4x downsampling stem on
# 32x32 images (smaller ones made the demo learn several times slower).
_CLS_RADIUS_RANGE = (0.32, 0.44)
_CLS_MIN_IMAGE_SIZE = 32  # leaves room to move the largest shape
_CLS_ROOT = 'data/demo_cls'  # DemoShapesDataset's default root


# ------------------------------------------------------------------ drawing
def _outline(shape: str, center: np.ndarray, radius: float,
             angle: float) -> np.ndarray:
    """Vertices (N, 2) of a shape with the given circumradius."""
    corners = {'circle': 48, 'square': 4, 'triangle': 3}[shape]
    theta = angle + 2 * math.pi * np.arange(corners) / corners
    return center + radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _bright_colour(rng: np.random.Generator, hue: int, jitter: tuple) -> tuple:
    """A saturated, bright BGR colour of hue ``hue + rng.integers(*jitter)``,
    so that shapes stand out of the dark noise."""
    hue = (hue + rng.integers(*jitter)) % 180
    hsv = np.array(
        [[[hue, rng.integers(150, 256),
           rng.integers(150, 256)]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _fill(image: np.ndarray, vertices: np.ndarray,
          colour: tuple) -> np.ndarray:
    """Fill the polygon in ``image``; returns its vertices as drawn (rounded
    to cv2's fixed-point precision)."""
    fixed = np.round(vertices * (1 << _FIXED_POINT_SHIFT)).astype(np.int32)
    cv2.fillPoly(image, [fixed], colour, cv2.LINE_8, _FIXED_POINT_SHIFT)
    return fixed / (1 << _FIXED_POINT_SHIFT)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.full((size, size, 3), rng.integers(0, 100), dtype=np.float64)


def _add_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    image += rng.normal(0, 20, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


# ------------------------------------------- writing and checking a folder
def _check_counts(**counts) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f'{name} must be a positive int, got {name}={value!r}')


def _write_image(path: str, image: np.ndarray) -> None:
    if not cv2.imwrite(path, image):
        raise OSError(f'could not write {path}')


def _write_folder(root: str, write: Callable[[str], None], caller: str):
    """``write(folder)`` into a temporary folder beside ``root``, then
    rename it to ``root``, so an interrupted run leaves no half-made
    dataset. ``root`` must not exist, nor be made meanwhile by another
    process: either is a ``FileExistsError``."""
    if osp.exists(root):
        raise FileExistsError(f'{caller}: {root} exists already')
    target = osp.normpath(osp.abspath(root))
    os.makedirs(osp.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(
        prefix=osp.basename(target) + '.tmp-', dir=osp.dirname(target))
    try:
        write(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if osp.isdir(target):  # made by another process meanwhile
                raise FileExistsError(f'{caller}: {root} exists already')
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _ensure(root: str, generate: Callable[[], None], wanted: dict,
            records: Dict[str, tuple], what: str) -> None:
    """Run ``generate()`` when ``root`` is missing; otherwise check that it
    was generated with ``wanted``, the arguments recorded in each JSON file
    ``records`` names (a path under ``root``: the keys leading to them)."""
    if not osp.exists(root):
        print(f'[demo] generating the {what} under {root}')
        try:
            generate()
            return
        except FileExistsError:
            pass  # another process (e.g. a second rank) made it meanwhile
    for name, keys in records.items():
        path = osp.join(root, name)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'{root} exists but has no {path}; it is not a generated '
                f'{what}. Remove it or choose another root.')
        with open(path) as f:
            found = json.load(f)
        for key in keys:
            found = found.get(key) if isinstance(found, dict) else None
        if found != wanted:
            raise ValueError(
                f'{root} was generated with {found} (recorded in {path}), '
                f'but {wanted} was asked for. Remove {root} to regenerate '
                'it, or choose another root.')


def _given(dataset_cfg: dict, names: tuple) -> dict:
    """The generator's arguments a dataset config gives."""
    return {name: dataset_cfg[name] for name in names if name in dataset_cfg}


# ---------------------------------------------------------------- detection
def _draw_detection_image(rng: np.random.Generator, size: int):
    """One image (H, W, 3 uint8 BGR) and its objects as (class, polygon)."""
    image = _background(rng, size)
    objects, placed = [], []  # placed: (center, radius) for overlap checks
    for _ in range(int(rng.integers(1, _MAX_OBJECTS + 1))):
        shape = DEMO_CLASSES[int(rng.integers(len(DEMO_CLASSES)))]
        radius = rng.uniform(*_RADIUS_RANGE)
        angle = rng.uniform(0, 2 * math.pi)
        colour = _bright_colour(rng, _HUES[shape],
                                (-_HUE_JITTER, _HUE_JITTER + 1))
        # Objects do not overlap, so every polygon is exactly what is visible.
        for _attempt in range(50):
            center = rng.uniform(radius + 1, size - 2 - radius, size=2)
            if all(
                    np.hypot(*(center - c)) >= radius + r + _GAP
                    for c, r in placed):
                break
        else:
            continue  # no free place left for this object: draw it nowhere
        placed.append((center, radius))
        drawn = _fill(image, _outline(shape, center, radius, angle), colour)
        # cv2 puts pixel centres at integer coordinates, COCO at +0.5.
        objects.append((shape, drawn + 0.5))
    return _add_noise(rng, image), objects


def _annotation(polygon: np.ndarray, size: int, image_id: int, ann_id: int,
                category_id: int) -> dict:
    flat = [round(float(v), 4) for v in polygon.reshape(-1)]
    rle = mask_utils.merge(mask_utils.frPyObjects([flat], size, size))
    x0, y0 = polygon.min(axis=0)
    x1, y1 = polygon.max(axis=0)
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=category_id,
        segmentation=[flat],
        area=float(mask_utils.area(rle)),
        bbox=[round(float(v), 4) for v in (x0, y0, x1 - x0, y1 - y0)],
        iscrowd=0)


def _write_coco_split(root: str, split: str, num_images: int, image_size: int,
                      seed: int, info: dict) -> None:
    rng = np.random.default_rng([seed, _SPLIT_SEEDS[split]])
    categories = [
        dict(id=i + 1, name=name, supercategory='shape')
        for i, name in enumerate(DEMO_CLASSES)
    ]
    images, annotations = [], []
    os.makedirs(osp.join(root, split))
    for image_id in range(1, num_images + 1):
        image, objects = _draw_detection_image(rng, image_size)
        file_name = f'{image_id:06d}.png'
        _write_image(osp.join(root, split, file_name), image)
        images.append(
            dict(
                id=image_id,
                file_name=file_name,
                width=image_size,
                height=image_size))
        for shape, polygon in objects:
            annotations.append(
                _annotation(polygon, image_size, image_id,
                            len(annotations) + 1,
                            DEMO_CLASSES.index(shape) + 1))
    coco = dict(
        info=info,
        images=images,
        annotations=annotations,
        categories=categories)
    with open(osp.join(root, 'annotations', f'instances_{split}.json'),
              'w') as f:
        json.dump(coco, f, indent=1)


def _detection_args(num_train, num_val, image_size, seed) -> dict:
    return dict(
        version=DETECTION_VERSION,
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        seed=seed)


def generate_demo_dataset(root: str,
                          num_train: int = 64,
                          num_val: int = 32,
                          image_size: int = 128,
                          seed: int = 0) -> None:
    """Write the detection dataset to ``root``, which must not exist yet."""
    _check_counts(num_train=num_train, num_val=num_val, image_size=image_size)
    if image_size < 2 * _RADIUS_RANGE[1] + 4:
        raise ValueError(f'image_size must be at least '
                         f'{int(2 * _RADIUS_RANGE[1] + 4)} to hold the '
                         f'largest shape, got image_size={image_size}')
    info = dict(
        description='mmsoftpool demo: shapes on noise',
        generator=_detection_args(num_train, num_val, image_size, seed))

    def write(folder):
        os.makedirs(osp.join(folder, 'annotations'))
        for split, count in zip(SPLITS, (num_train, num_val)):
            _write_coco_split(folder, split, count, image_size, seed, info)

    _write_folder(root, write, 'generate_demo_dataset')


def ensure_demo_dataset(root: str,
                        num_train: int = 64,
                        num_val: int = 32,
                        image_size: int = 128,
                        seed: int = 0) -> Dict[str, str]:
    """Generate the detection dataset on first use; check an existing one
    matches. Returns the paths of the two annotation files."""
    ann_files = {
        split: osp.join(root, 'annotations', f'instances_{split}.json')
        for split in SPLITS
    }
    _ensure(
        root, lambda: generate_demo_dataset(root, num_train, num_val,
                                            image_size, seed),
        _detection_args(num_train, num_val, image_size, seed),
        {osp.relpath(path, root): ('info', 'generator')
         for path in ann_files.values()}, 'demo dataset')
    return ann_files


@DATASETS.register_module()
class DemoShapesCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` over the generated shapes, made under
    ``data_root`` on first use and checked after (:func:`ensure_demo_dataset`).

    Args:
        num_train, num_val, image_size, seed: the generator's arguments (its
            defaults where not given); an existing ``data_root`` must have
            been made with the same ones.
        *args, **kwargs: those of ``CocoDataset``.
    """

    def __init__(self, *args, **kwargs):
        self.generate_if_missing(kwargs)
        for name in DETECTION_ARGS:
            kwargs.pop(name, None)
        super().__init__(*args, **kwargs)

    @staticmethod
    def generate_if_missing(dataset_cfg: dict) -> None:
        """Generate the data when ``data_root`` is missing, check it when it
        is there. Also called by the data pre-flight check, before it
        looks."""
        if dataset_cfg.get('data_root'):
            ensure_demo_dataset(dataset_cfg['data_root'],
                                **_given(dataset_cfg, DETECTION_ARGS))


# ----------------------------------------------------------- classification
def _draw_classification_image(rng: np.random.Generator, shape: str,
                               size: int) -> np.ndarray:
    """One image (H, W, 3 uint8 BGR) showing ``shape``."""
    image = _background(rng, size)
    radius = rng.uniform(*_CLS_RADIUS_RANGE) * size
    center = rng.uniform(radius + 1, size - 2 - radius, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    _fill(image, _outline(shape, center, radius, angle),
          _bright_colour(rng, 0, (0, 180)))
    return _add_noise(rng, image)


def _classification_args(num_train_per_class, num_val_per_class, image_size,
                         seed) -> dict:
    return dict(
        version=CLASSIFICATION_VERSION,
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
    """Write the classification dataset to ``root``, which must not exist
    yet."""
    _check_counts(
        num_train_per_class=num_train_per_class,
        num_val_per_class=num_val_per_class,
        image_size=image_size)
    if image_size < _CLS_MIN_IMAGE_SIZE:
        raise ValueError(f'image_size must be at least {_CLS_MIN_IMAGE_SIZE}'
                         f', got image_size={image_size}')
    args = _classification_args(num_train_per_class, num_val_per_class,
                                image_size, seed)

    def write(folder):
        for split, count in zip(SPLITS,
                                (num_train_per_class, num_val_per_class)):
            rng = np.random.default_rng([seed, _SPLIT_SEEDS[split]])
            for shape in DEMO_CLASSES:
                os.makedirs(osp.join(folder, split, shape))
                for index in range(1, count + 1):
                    _write_image(
                        osp.join(folder, split, shape, f'{index:06d}.png'),
                        _draw_classification_image(rng, shape, image_size))
        with open(osp.join(folder, 'meta.json'), 'w') as f:
            json.dump(dict(generator=args), f, indent=1)

    _write_folder(root, write, 'generate_classification_demo')


def ensure_classification_demo(root: str,
                               num_train_per_class: int = 100,
                               num_val_per_class: int = 30,
                               image_size: int = 32,
                               seed: int = 0) -> None:
    """Generate the classification dataset on first use; check an existing
    one matches."""
    _ensure(
        root, lambda: generate_classification_demo(
            root, num_train_per_class, num_val_per_class, image_size, seed),
        _classification_args(num_train_per_class, num_val_per_class,
                             image_size, seed), {'meta.json': ('generator', )},
        'classification demo dataset')


if is_installed('mmpretrain'):
    from mmpretrain.datasets import CustomDataset
    from mmpretrain.registry import DATASETS as PRETRAIN_DATASETS

    @PRETRAIN_DATASETS.register_module()
    class DemoShapesDataset(CustomDataset):
        """The generated shapes, read by MMPretrain's ``CustomDataset``,
        made under ``root`` on first use and checked after
        (:func:`ensure_classification_demo`). Class indices follow the
        sorted folder names, as in any ImageFolder-style dataset.

        Args:
            root (str): folder of the generated dataset.
            split (str): ``'train'`` or ``'val'``.
            num_train_per_class, num_val_per_class, image_size, seed: the
                generator's arguments (its defaults where not given); an
                existing ``root`` must have been made with the same ones.
            **kwargs: those of ``CustomDataset`` (``pipeline``,
                ``test_mode``, ...), except the paths.
        """

        def __init__(self,
                     root: str = _CLS_ROOT,
                     split: str = 'train',
                     **kwargs):
            if split not in SPLITS:
                raise ValueError(f'DemoShapesDataset: split must be one of '
                                 f'{SPLITS}, got split={split!r}')
            given = sorted({'data_root', 'data_prefix', 'ann_file'}
                           & set(kwargs))
            if given:
                raise TypeError(f'DemoShapesDataset: the paths follow from '
                                f'root and split; {given} cannot be given')
            self.generate_if_missing(dict(kwargs, root=root))
            for name in CLASSIFICATION_ARGS:
                kwargs.pop(name, None)
            super().__init__(
                data_root=root, data_prefix=split, with_label=True, **kwargs)

        @staticmethod
        def generate_if_missing(dataset_cfg: dict) -> None:
            """Generate the data when ``root`` is missing, check it when it
            is there (as ``DemoShapesCocoDataset`` does)."""
            ensure_classification_demo(
                dataset_cfg.get('root', _CLS_ROOT),
                **_given(dataset_cfg, CLASSIFICATION_ARGS))
