"""Check a config's data before the Runner is built, so that a wrong path or a
damaged file fails at once with its name instead of deep inside a dataloader
or an evaluator (or, worse, is silently skipped by mmdet's ``CocoDataset``).

What :func:`check_data_config` checks for each dataloader it is asked about
(dataset wrappers such as ``RepeatDataset`` or ``ConcatDataset`` are followed):

- ``data_root``, ``ann_file`` and ``data_prefix`` folders exist;
- for COCO-style datasets (subclasses of mmdet's ``CocoDataset``) and for
  the ``ann_file`` of ``CocoMetric``-like evaluators: the annotation file is
  COCO JSON (``images``, ``annotations``, ``categories`` with their required
  fields, each of the type in ``_FIELDS``, no duplicate ids, annotations that
  refer to listed images and categories), it lists images, the training set
  lists annotations, and every class name of the dataset's ``metainfo`` is
  one of its categories;
- every image listed is a non-empty file that PIL recognises as an image
  (``PIL.Image.verify``: header, and for PNG the chunk checksums), or, with
  ``images='full'``, that PIL decodes entirely (a JPEG cut short fails here
  rather than at its first batch); decoded images are remembered by path,
  size and modification time, so a second run skips them (a damaged cache
  is ignored and rewritten, an unwritable one skipped, each with a warning).

It also reports, as warnings, what mmdet's ``CocoDataset`` does silently:
annotations it drops (no overlap with the image, ``w < 1``, ``h < 1``,
``area <= 0``, a category outside the dataset's classes, ``ignore``), boxes
it keeps unclipped although they leave the image, non-finite coordinates,
images its ``filter_cfg`` removes from training, and images whose
``width`` / ``height`` disagree with the image as mmcv loads it (turned by
its EXIF orientation). mmdet's own tools run none of these checks;
``tools/misc/check_data.py CONFIG`` runs them alone.

Remote paths (``s3://`` and the like) are not checked.
"""
import hashlib
import importlib
import json
import logging
import math
import os
import os.path as osp
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import DATASETS, METRICS
from PIL import Image

from mmsoftpool.engine.atomic_files import write_atomically

_SHOWN = 10  # problems listed in one message; the rest are counted


def _as_float(value) -> Optional[float]:
    """``value`` as the float mmdet computes with, or None if it is no
    number: a bool is an int in Python but not a number here, and json reads
    ``10**400`` as an int that no float holds."""
    if type(value) not in (int, float):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _is_integer(value) -> bool:
    return type(value) is int  # not bool, an int subclass


def _is_finite(value) -> bool:
    number = _as_float(value)
    return number is not None and math.isfinite(number)


def _is_box(value) -> bool:
    # NaN or inf coordinates pass: mmdet drops or keeps such boxes, and
    # annotation_warnings says which.
    return (isinstance(value, list) and len(value) == 4
            and all(_as_float(v) is not None for v in value))


# The required fields of each list of a COCO file: the test their value (as
# json.load returns it) must pass, and what the message says it must be.
# Ids must be ints: they are hashed and compared as such.
_INTEGER = (_is_integer, 'an integer')
_STRING = (lambda value: isinstance(value, str), 'a string')
_FINITE = (_is_finite, 'a finite number')
_FIELDS = {  # categories before annotations, which refer to them
    'images': dict(id=_INTEGER, file_name=_STRING, width=_FINITE,
                   height=_FINITE),
    'categories': dict(id=_INTEGER, name=_STRING),
    'annotations': dict(
        id=_INTEGER, image_id=_INTEGER, category_id=_INTEGER,
        bbox=(_is_box, '[x, y, w, h] of numbers'), area=_FINITE,
        # mmdet takes any true value as crowd, a string '0' too
        iscrowd=(lambda value: type(value) in (int, bool) and value in (0, 1),
                 '0 or 1')),
}


def _is_remote(path: str) -> bool:
    return '://' in str(path)


def _listed(problems: Sequence[str]) -> str:
    more = len(problems) - _SHOWN
    return '\n  ' + '\n  '.join(problems[:_SHOWN]) + (
        f'\n  ... and {more} more' if more > 0 else '')


def _shown(value, limit: int = 60) -> str:
    """``repr(value)``, cut short: a bad value may be a 400-digit int."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _join(root: str, path: str) -> str:
    """A dataset path as mmengine's BaseDataset resolves it."""
    return path if osp.isabs(path) or not root else osp.join(root, path)


def load_coco_json(path: str, where: str, need_annotations: bool) -> dict:
    """Read ``path`` and check that it is COCO-format annotation JSON.

    ``where`` names the config key the path came from, for the messages.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{where}: annotation file {path!r} does not exist')
    if osp.getsize(path) == 0:
        raise ValueError(f'{where}: annotation file {path!r} is empty')
    try:
        with open(path, encoding='utf-8') as f:
            coco = json.load(f)
    # ValueError: JSONDecodeError, UnicodeDecodeError and ints of more than
    # sys.get_int_max_str_digits() digits; RecursionError: nesting too deep.
    except (ValueError, RecursionError) as err:
        raise ValueError(f'{where}: annotation file {path!r} is not valid '
                         f'JSON ({err})') from None
    not_coco = f'{where}: annotation file {path!r} is not COCO-format JSON'
    if not isinstance(coco, dict):
        raise ValueError(f'{not_coco}: its top level is a '
                         f'{type(coco).__name__}, not an object')
    required = ('images', 'annotations',
                'categories') if need_annotations else ('images',
                                                        'categories')
    missing = [key for key in required if key not in coco]
    if missing:
        raise ValueError(f'{not_coco}: it has no {", ".join(missing)} '
                         f'(top-level keys: {sorted(coco)})')
    for key in ('images', 'annotations', 'categories'):
        if key in coco and not isinstance(coco[key], list):
            raise ValueError(f'{not_coco}: "{key}" is a '
                             f'{type(coco[key]).__name__}, not a list')
    if not coco['images']:
        raise ValueError(f'{where}: annotation file {path!r} lists no images')
    if not coco['categories']:
        raise ValueError(
            f'{where}: annotation file {path!r} lists no categories')
    if need_annotations and not coco['annotations']:
        raise ValueError(
            f'{where}: annotation file {path!r} lists no annotations')

    problems = []
    ids = {}
    for key, fields in _FIELDS.items():
        seen = set()
        for index, entry in enumerate(coco.get(key, [])):
            if not isinstance(entry, dict):
                problems.append(f'{key}[{index}] is not an object')
                continue
            absent = [field for field in fields if field not in entry]
            if absent:
                problems.append(f'{key}[{index}] lacks {", ".join(absent)}')
            for field, (valid, expected) in fields.items():
                if field in entry and not valid(entry[field]):
                    problems.append(f'{key}[{index}] has {field} '
                                    f'{_shown(entry[field])}, not {expected}')
            if _is_integer(entry.get('id')):  # a bad id is reported above
                if entry['id'] in seen:
                    problems.append(
                        f'{key}[{index}] repeats id {entry["id"]!r}')
                seen.add(entry['id'])
        ids[key] = seen
    for index, ann in enumerate(coco.get('annotations', [])):
        for field, listed in (('image_id', 'images'),
                              ('category_id', 'categories')):
            if (isinstance(ann, dict) and _is_integer(ann.get(field))
                    and ann[field] not in ids[listed]):
                problems.append(f'annotations[{index}] refers to {field} '
                                f'{ann[field]!r}, which is not listed')
    if problems:
        raise ValueError(f'{not_coco} ({len(problems)} problems):' +
                         _listed(problems))
    return coco


IMAGE_CHECKS = ('header', 'full')


def _decoded_cache(img_dir: str) -> str:
    """Where the images of ``img_dir`` that decoded fully are remembered."""
    root = os.environ.get('XDG_CACHE_HOME') or osp.expanduser('~/.cache')
    key = hashlib.sha1(osp.abspath(img_dir).encode()).hexdigest()[:16]
    return osp.join(root, 'mmsoftpool', 'decoded_images', f'{key}.json')


# LoadImageFromFile's color_type values with which mmcv.imfrombytes keeps the
# stored orientation (cv2 IMREAD_UNCHANGED, or IMREAD_IGNORE_ORIENTATION).
_STORED_ORIENTATION = ('unchanged', 'color_ignore_orientation',
                       'grayscale_ignore_orientation')


def applies_exif_orientation(pipeline) -> bool:
    """Whether the ``LoadImageFromFile`` of ``pipeline`` (mmcv's; none: its
    defaults, ``color_type='color'``, ``imdecode_backend='cv2'``) turns images
    by their EXIF orientation, as cv2's IMREAD_COLOR and mmcv's pillow
    backend do; turbojpeg ignores EXIF."""
    for step in pipeline or ():
        type_ = step.get('type') if isinstance(step, dict) else None
        name = getattr(type_, '__name__', str(type_)).split('.')[-1]
        if name == 'LoadImageFromFile':
            return (step.get('color_type', 'color') not in _STORED_ORIENTATION
                    and step.get('imdecode_backend', 'cv2') != 'turbojpeg')
    return True


def _size_as_loaded(img: Image.Image, exif: bool) -> Tuple[tuple, int]:
    """(width, height) of the array mmcv loads from ``img``, and the EXIF
    orientation that turned it a quarter turn (1 if none did).

    PIL's size is the stored one, except for TIFF, which PIL turns already
    (and so does cv2, whatever the flag). Only EXIF read with the header
    counts: ``getexif`` would decode a whole PNG to look after its pixels.
    """
    if not exif or img.format == 'TIFF' or 'exif' not in img.info:
        return img.size, 1
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # EXIF PIL cannot parse: cv2 loads the image as stored
        return img.size, 1
    if orientation in (5, 6, 7, 8):  # 90 or 270 degrees, maybe mirrored
        return img.size[::-1], orientation
    return img.size, 1


def _read_image(path: str, full: bool, decoded: dict, exif: bool):
    """(problem or None, (width, height) as mmcv loads it or None, EXIF
    orientation that turned it, cache key if decoded)."""
    if not osp.isfile(path):
        return f'{path!r}: no such file', None, 1, None
    stat = os.stat(path)
    if stat.st_size == 0:
        return f'{path!r}: empty file', None, 1, None
    key = f'{stat.st_size}:{stat.st_mtime_ns}'
    try:
        with Image.open(path) as img:
            size, orientation = _size_as_loaded(img, exif)
            if full and decoded.get(path) != key:
                img.load()  # decodes all of it: a truncated file fails
            elif not full:
                img.verify()
    except Exception as err:  # PIL raises many types for bad files
        return f'{path!r}: not a readable image ({err})', None, 1, None
    return None, size, orientation, key if full else None


def _read_decoded(cache: str, where: str) -> Tuple[dict, List[str]]:
    """The images a full decode passed, as ``cache`` remembers them (path:
    size and mtime), and a warning if it is damaged or not ours: it is then
    ignored, and rewritten after this check."""
    if not osp.isfile(cache):
        return {}, []
    try:
        with open(cache, encoding='utf-8') as f:
            decoded = json.load(f)
    except (OSError, ValueError, RecursionError) as err:
        problem = f'not readable JSON: {err}'
    else:
        if isinstance(decoded, dict) and all(
                isinstance(stamp, str) for stamp in decoded.values()):
            return decoded, []
        problem = (f'a JSON {type(decoded).__name__}, not paths with their '
                   'size and mtime')
    return {}, [f'{where}: the cache of decoded images {cache!r} is damaged '
                f'({problem}); it is ignored and rewritten']


def _write_decoded(cache: str, decoded: dict, where: str) -> List[str]:
    try:
        write_atomically(cache, json.dumps(decoded).encode())
    except OSError as err:  # read-only home, a file where a folder should be
        return [f'{where}: cannot write the cache of decoded images '
                f'{cache!r} ({err}); the next full check decodes them again']
    return []


def check_images(coco: dict, img_dir: str, where: str, ann_file: str,
                 images: str = 'header',
                 exif_orientation: bool = True) -> List[str]:
    """Every image ``coco`` lists is a non-empty file PIL can read (with
    ``images='full'``: decode). Returns warnings for sizes that disagree
    with the annotation file: the size as mmcv loads the image, turned by
    its EXIF orientation unless ``exif_orientation`` is False (see
    :func:`applies_exif_orientation`)."""
    if images not in IMAGE_CHECKS:
        raise ValueError(f'images must be one of {IMAGE_CHECKS}, got '
                         f'images={images!r}')
    full = images == 'full'
    cache = _decoded_cache(img_dir)
    decoded, warnings = _read_decoded(cache, where) if full else ({}, [])
    paths = [osp.join(img_dir, image['file_name']) for image in coco['images']]
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        results = list(pool.map(
            lambda path: _read_image(path, full, decoded, exif_orientation),
            paths))
    problems = [problem for problem, _, _, _ in results if problem]
    if full:
        decoded.update((path, key)
                       for path, (_, _, _, key) in zip(paths, results)
                       if key is not None)
        warnings += _write_decoded(cache, decoded, where)
    if problems:
        for warning in warnings:  # the error below ends the check
            print_log(warning, logger='current', level=logging.WARNING)
        raise ValueError(
            f'{where}: {len(problems)} of the {len(coco["images"])} images '
            f'listed in {ann_file!r} cannot be read:' + _listed(problems))
    mismatched = []
    for path, image, (_, size, orientation, _) in zip(paths, coco['images'],
                                                      results):
        if (image['width'], image['height']) == size:
            continue
        loaded = (f'{size[0]}x{size[1]} as mmcv loads it (EXIF orientation '
                  f'{orientation} turns the stored {size[1]}x{size[0]})'
                  if orientation != 1 else f'{size[0]}x{size[1]} in the file')
        mismatched.append(f'{path!r}: {image["width"]}x{image["height"]} in '
                          f'the annotation file, {loaded}')
    if mismatched:
        warnings.append(
            f'{where}: {len(mismatched)} images of {ann_file!r} have another '
            'size than the annotation file says; mmdet uses the size of the '
            'loaded image and takes the boxes as they are:' +
            _listed(mismatched))
    return warnings


def mmdet_drop_reason(ann: dict, image: dict, cat_ids) -> Optional[str]:
    """Why mmdet 3.3's ``CocoDataset.parse_data_info`` drops ``ann``, with
    its own expressions, or None if it keeps it."""
    if ann.get('ignore', False):
        return 'are marked "ignore"'
    x1, y1, w, h = ann['bbox']
    inter_w = max(0, min(x1 + w, image['width']) - max(x1, 0))
    inter_h = max(0, min(y1 + h, image['height']) - max(y1, 0))
    if inter_w * inter_h == 0:
        return 'have no overlap with their image'
    if ann['area'] <= 0:
        return 'have area <= 0'
    if w < 1 or h < 1:
        return 'have w < 1 or h < 1'
    if ann['category_id'] not in cat_ids:
        return 'have a category outside the dataset\'s classes'
    return None


def annotation_warnings(coco: dict, classes: Sequence[str], where: str,
                        ann_file: str, filter_cfg: Optional[dict],
                        training: bool) -> List[str]:
    """What mmdet's ``CocoDataset`` will silently do with ``coco``'s
    annotations and images, one warning per kind, with the first ids."""
    images = {image['id']: image for image in coco['images']}
    cat_ids = {cat['id'] for cat in coco['categories']
               if cat['name'] in set(classes)}
    groups = {}

    def note(kind, ann_id):
        groups.setdefault(kind, []).append(ann_id)

    with_classes = set()
    for ann in coco['annotations']:
        image = images[ann['image_id']]
        if ann['category_id'] in cat_ids:
            with_classes.add(ann['image_id'])
        if not all(math.isfinite(v) for v in ann['bbox']):
            reason = mmdet_drop_reason(ann, image, cat_ids)
            note('have non-finite coordinates; mmdet ' +
                 ('drops them' if reason else 'keeps them'), ann['id'])
            continue
        reason = mmdet_drop_reason(ann, image, cat_ids)
        if reason:
            note(f'{reason}: mmdet drops them', ann['id'])
            continue
        x1, y1, w, h = ann['bbox']
        if x1 < 0 or y1 < 0 or x1 + w > image['width'] or \
                y1 + h > image['height']:
            note('lie partly outside their image: mmdet keeps them '
                 'unclipped', ann['id'])
    warnings = [
        f'{where}: {len(ids)} annotations of {ann_file!r} {kind} (ids '
        f'{", ".join(map(str, ids[:_SHOWN]))}{" ..." if len(ids) > _SHOWN else ""})'
        for kind, ids in groups.items()
    ]
    if training and filter_cfg:
        image_groups = {}
        min_size = filter_cfg.get('min_size', 0)
        for image in coco['images']:
            if filter_cfg.get('filter_empty_gt', False) and \
                    image['id'] not in with_classes:
                image_groups.setdefault('have no annotation of the dataset\'s '
                                        'classes', []).append(image['id'])
            elif min(image['width'], image['height']) < min_size:
                image_groups.setdefault(f'are smaller than filter_cfg.min_size='
                                        f'{min_size}', []).append(image['id'])
        warnings += [
            f'{where}: {len(ids)} images of {ann_file!r} {kind}: mmdet\'s '
            f'filter_cfg leaves them out of training (ids '
            f'{", ".join(map(str, ids[:_SHOWN]))}{" ..." if len(ids) > _SHOWN else ""})'
            for kind, ids in image_groups.items()
        ]
    return warnings


def _leaf_datasets(dataset: dict, where: str) -> Iterator[Tuple[dict, str]]:
    """The datasets that read files, through wrappers (``dataset`` or
    ``datasets`` keys)."""
    if 'dataset' in dataset:
        yield from _leaf_datasets(dataset['dataset'], f'{where}.dataset')
    elif 'datasets' in dataset:
        for index, child in enumerate(dataset['datasets']):
            yield from _leaf_datasets(child, f'{where}.datasets[{index}]')
    else:
        yield dataset, where


def _resolve(type_, registry, scope):
    """The class a config's ``type`` names, as the Runner would build it."""
    if not isinstance(type_, str):
        return type_
    with registry.switch_scope_and_registry(scope) as scoped:
        cls = scoped.get(type_)
    if cls is None:
        raise KeyError(f'{type_!r} is not registered in {registry.name} '
                       f'registry of scope {scope!r}')
    return cls


def _is_subclass(type_, registry, scope, module: str, name: str) -> bool:
    """Whether a config's ``type`` is ``module.name`` or a subclass of it."""
    try:
        base = getattr(importlib.import_module(module), name)
    except ImportError:  # e.g. a classification-only setup without mmdet
        return False
    cls = _resolve(type_, registry, scope)
    return isinstance(cls, type) and issubclass(cls, base)


def check_dataset(dataset: dict, where: str, scope: str,
                  need_annotations: bool, images: str = 'header') -> List[str]:
    """Check one dataset config (no wrapper); returns the warnings."""
    try:
        cls = _resolve(dataset['type'], DATASETS, scope)
    except KeyError:
        cls = None  # the Runner will say so; the checks need not
    if hasattr(cls, 'generate_if_missing'):  # a dataset made on first use
        cls.generate_if_missing(dataset)
    data_root = dataset.get('data_root') or ''
    if _is_remote(data_root):
        return []
    if data_root and not osp.isdir(data_root):
        raise FileNotFoundError(
            f'{where}.data_root: folder {data_root!r} does not exist')
    for key, prefix in (dataset.get('data_prefix') or {}).items():
        folder = _join(data_root, prefix)
        if prefix and not _is_remote(prefix) and not osp.isdir(folder):
            raise FileNotFoundError(
                f'{where}.data_prefix.{key}: folder {folder!r} does not exist')
    ann_file = dataset.get('ann_file') or ''
    if not ann_file or _is_remote(ann_file):
        return []
    ann_path = _join(data_root, ann_file)
    if not _is_subclass(dataset['type'], DATASETS, scope, 'mmdet.datasets',
                        'CocoDataset'):
        if not osp.isfile(ann_path):
            raise FileNotFoundError(
                f'{where}.ann_file: file {ann_path!r} does not exist')
        return []

    coco = load_coco_json(ann_path, f'{where}.ann_file', need_annotations)
    classes = (dataset.get('metainfo') or {}).get('classes')
    if classes is None:
        classes = _resolve(dataset['type'], DATASETS,
                           scope).METAINFO['classes']
    names = {category['name'] for category in coco['categories']}
    absent = [name for name in classes if name not in names]
    if absent:
        # CocoDataset would drop these classes' objects without a word.
        raise ValueError(
            f'{where}: {len(absent)} of the dataset\'s {len(classes)} '
            f'classes are not categories of {ann_path!r}: {absent[:_SHOWN]} '
            f'(its categories: {sorted(names)[:_SHOWN]}); set '
            f'{where}.metainfo.classes to the names it uses')
    img_prefix = (dataset.get('data_prefix') or {}).get('img', '')
    warnings = check_images(
        coco, _join(data_root, img_prefix), where, ann_path, images,
        exif_orientation=applies_exif_orientation(dataset.get('pipeline')))
    if 'annotations' in coco:
        warnings += annotation_warnings(
            coco, classes, where, ann_path, dataset.get('filter_cfg'),
            training=need_annotations and not dataset.get('test_mode', False))
    return warnings


def _evaluators(evaluator, where: str) -> Iterator[Tuple[dict, str]]:
    if isinstance(evaluator, dict) and 'metrics' in evaluator:
        evaluator, where = evaluator['metrics'], f'{where}.metrics'
    if isinstance(evaluator, dict):
        yield evaluator, where
    elif isinstance(evaluator, (list, tuple)):
        for index, metric in enumerate(evaluator):
            yield metric, f'{where}[{index}]'


def check_data_config(cfg: Config,
                      splits: Sequence[str] = ('train', 'val', 'test'),
                      images: str = 'header') -> List[str]:
    """Check the data of ``cfg``'s ``{split}_dataloader`` and
    ``{split}_evaluator`` for each of ``splits`` the config has.

    ``tools/train.py`` checks ``('train', 'val')``, ``tools/test.py``
    ``('test',)``. Raises ``FileNotFoundError`` or ``ValueError`` naming the
    config key and the file; logs (and returns) the warnings about what
    mmdet will drop or take as it is.
    """
    warnings = []
    unknown = set(splits) - {'train', 'val', 'test'}
    if unknown:
        raise ValueError(f'splits must be among train, val, test; got '
                         f'{sorted(unknown)}')
    scope = cfg.get('default_scope', None)
    for split in splits:
        dataloader = cfg.get(f'{split}_dataloader', None)
        if dataloader:
            where = f'{split}_dataloader.dataset'
            for dataset, leaf in _leaf_datasets(dataloader['dataset'],
                                                where):
                warnings += check_dataset(
                    dataset,
                    leaf,
                    scope,
                    need_annotations=split == 'train',
                    images=images)
        for metric, where in _evaluators(
                cfg.get(f'{split}_evaluator', None), f'{split}_evaluator'):
            ann_file = metric.get('ann_file')
            if not ann_file or _is_remote(ann_file):
                continue
            if _is_subclass(metric['type'], METRICS, scope,
                            'mmdet.evaluation', 'CocoMetric'):
                # Scoring needs ground truth; format_only just writes results.
                load_coco_json(
                    ann_file,
                    f'{where}.ann_file',
                    need_annotations=not metric.get('format_only', False))
            elif not osp.isfile(ann_file):
                raise FileNotFoundError(
                    f'{where}.ann_file: file {ann_file!r} does not exist')
    for warning in warnings:
        print_log(warning, logger='current', level=logging.WARNING)
    return warnings
