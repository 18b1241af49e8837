"""A small generated COCO-format dataset of shapes, for the CPU demo.

Images show filled circles, squares and triangles (random size and rotation;
reddish, greenish and bluish hues respectively, so that a small detector
trained from scratch learns them in minutes) on a noisy background. Each
object is annotated with a polygon mask,
its box and its mask area, in COCO's format, so mmdet's ``CocoDataset`` and
``CocoMetric`` read it like any COCO subset. The generator is deterministic:
the same arguments give the same PNG bytes and the same JSON.

Layout under ``root``::

    annotations/instances_train.json   annotations/instances_val.json
    train/000001.png ...               val/000001.png ...
"""
import json
import math
import os
import os.path as osp
import shutil
import tempfile
from typing import Dict

import cv2
import numpy as np
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from pycocotools import mask as mask_utils

DEMO_CLASSES = ('circle', 'square', 'triangle')
# Bump when the drawing changes, so that data made by an older generator is
# recognised as such instead of being mixed with new expectations.
GENERATOR_VERSION = 2

_MAX_OBJECTS = 4
# Circumradius in pixels: the smallest triangle's box (about 24x28) still
# overlaps RetinaNet's smallest anchor (32x32) with IoU > 0.5.
_RADIUS_RANGE = (16.0, 32.0)
_HUES = dict(circle=0, square=60, triangle=120)  # OpenCV hue, 0..179
_HUE_JITTER = 15
_GAP = 2.0  # pixels kept free between the circumcircles of two objects
_FIXED_POINT_SHIFT = 4  # cv2.fillPoly draws with 1/16 pixel precision
_SPLIT_SEEDS = {'train': 0, 'val': 1}


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive int, got {name}={value!r}')


def _outline(shape: str, center: np.ndarray, radius: float,
             angle: float) -> np.ndarray:
    """Vertices (N, 2) of a shape with the given circumradius."""
    corners = {'circle': 48, 'square': 4, 'triangle': 3}[shape]
    theta = angle + 2 * math.pi * np.arange(corners) / corners
    return center + radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _random_colour(rng: np.random.Generator, shape: str) -> tuple:
    """A saturated, bright BGR colour of the shape's hue range, so that shapes
    stand out of the dark noise."""
    hue = (_HUES[shape] + rng.integers(-_HUE_JITTER, _HUE_JITTER + 1)) % 180
    hsv = np.array(
        [[[hue, rng.integers(150, 256),
           rng.integers(150, 256)]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _draw_image(rng: np.random.Generator, size: int):
    """One image (H, W, 3 uint8 BGR) and its objects as (class, polygon)."""
    background = rng.integers(0, 100)
    image = np.full((size, size, 3), background, dtype=np.float64)
    objects, placed = [], []  # placed: (center, radius) for overlap checks
    for _ in range(int(rng.integers(1, _MAX_OBJECTS + 1))):
        shape = DEMO_CLASSES[int(rng.integers(len(DEMO_CLASSES)))]
        radius = rng.uniform(*_RADIUS_RANGE)
        angle = rng.uniform(0, 2 * math.pi)
        colour = _random_colour(rng, shape)
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
        vertices = _outline(shape, center, radius, angle)
        fixed = np.round(vertices * (1 << _FIXED_POINT_SHIFT)).astype(np.int32)
        cv2.fillPoly(image, [fixed], colour, cv2.LINE_8, _FIXED_POINT_SHIFT)
        # cv2 puts pixel centres at integer coordinates, COCO at +0.5.
        objects.append((shape, fixed / (1 << _FIXED_POINT_SHIFT) + 0.5))
    image += rng.normal(0, 20, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), objects


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


def _write_split(root: str, split: str, num_images: int, image_size: int,
                 seed: int, info: dict) -> None:
    rng = np.random.default_rng([seed, _SPLIT_SEEDS[split]])
    categories = [
        dict(id=i + 1, name=name, supercategory='shape')
        for i, name in enumerate(DEMO_CLASSES)
    ]
    images, annotations = [], []
    os.makedirs(osp.join(root, split))
    for image_id in range(1, num_images + 1):
        image, objects = _draw_image(rng, image_size)
        file_name = f'{image_id:06d}.png'
        if not cv2.imwrite(osp.join(root, split, file_name), image):
            raise OSError(f'could not write {osp.join(root, split, file_name)}')
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


def generate_demo_dataset(root: str,
                          num_train: int = 64,
                          num_val: int = 32,
                          image_size: int = 128,
                          seed: int = 0) -> None:
    """Write the dataset to ``root``, which must not exist yet.

    Files are written to a temporary folder beside ``root`` and moved into
    place at the end, so an interrupted run leaves no half-made dataset.
    """
    for name, value in (('num_train', num_train), ('num_val', num_val),
                        ('image_size', image_size)):
        _check_count(name, value)
    if image_size < 2 * _RADIUS_RANGE[1] + 4:
        raise ValueError(f'image_size must be at least '
                         f'{int(2 * _RADIUS_RANGE[1] + 4)} to hold the '
                         f'largest shape, got image_size={image_size}')
    if osp.exists(root):
        raise FileExistsError(f'generate_demo_dataset: {root} exists already')
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    info = dict(
        description='mmsoftpool demo: shapes on noise',
        generator=_generator_args(num_train, num_val, image_size, seed))
    tmp = tempfile.mkdtemp(prefix=osp.basename(root) + '.tmp-', dir=parent)
    try:
        os.makedirs(osp.join(tmp, 'annotations'))
        _write_split(tmp, 'train', num_train, image_size, seed, info)
        _write_split(tmp, 'val', num_val, image_size, seed, info)
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _generator_args(num_train, num_val, image_size, seed) -> dict:
    return dict(
        version=GENERATOR_VERSION,
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        seed=seed)


def ensure_demo_dataset(root: str,
                        num_train: int = 64,
                        num_val: int = 32,
                        image_size: int = 128,
                        seed: int = 0) -> Dict[str, str]:
    """Generate the dataset on first use; check an existing one matches.

    Returns the paths of the two annotation files. A dataset at ``root`` that
    was made with other arguments (or by another generator version) is an
    error, never silently reused or overwritten.
    """
    ann_files = {
        split: osp.join(root, 'annotations', f'instances_{split}.json')
        for split in ('train', 'val')
    }
    if not osp.exists(root):
        print(f'[demo] generating the demo dataset under {root}')
        generate_demo_dataset(root, num_train, num_val, image_size, seed)
        return ann_files
    wanted = _generator_args(num_train, num_val, image_size, seed)
    for split, ann_file in ann_files.items():
        if not osp.isfile(ann_file):
            raise FileNotFoundError(
                f'{root} exists but has no {ann_file}; it is not a demo '
                f'dataset. Remove it or choose another root.')
        with open(ann_file) as f:
            found = json.load(f).get('info', {}).get('generator')
        if found != wanted:
            raise ValueError(
                f'{ann_file} was generated with {found}, but {wanted} was '
                f'asked for. Remove {root} to regenerate it, or choose '
                f'another root.')
    return ann_files


@DATASETS.register_module()
class DemoShapesCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` over the generated shapes, which are made
    under ``data_root`` (with the generator's defaults) when it does not
    exist, so a config that names it trains with nothing prepared, as the
    classification demo does. An existing ``data_root`` is used as it is
    (``tools/demo.py`` checks it matches the arguments it was asked for)."""

    def __init__(self, *args, **kwargs):
        self.generate_if_missing(kwargs)
        super().__init__(*args, **kwargs)

    @staticmethod
    def generate_if_missing(dataset_cfg: dict) -> None:
        """Also called by the data pre-flight check, before it looks."""
        root = dataset_cfg.get('data_root')
        if root and not osp.exists(root):
            print(f'[demo] generating the demo dataset under {root}')
            generate_demo_dataset(root)
