"""check_data_config on the demo RetinaNet config and a small generated COCO
dataset, intact and damaged in each way it must report."""
import copy
import json
import os
import os.path as osp
import shutil

import pytest
from mmengine.config import Config

from mmsoftpool.tools.data_checks import check_data_config
from mmsoftpool.datasets.demo import generate_demo_dataset

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs/demo/retinanet_r18_maxpool_demo.py')


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('data') / 'demo'
    generate_demo_dataset(str(root), num_train=6, num_val=3)
    return root


@pytest.fixture(scope='module')
def demo_cfg():
    return Config.fromfile(CONFIG)


@pytest.fixture
def data(demo_root, demo_cfg, tmp_path):
    """A private copy of the dataset and a config that points at it."""
    root = tmp_path / 'demo'
    shutil.copytree(demo_root, root)
    cfg = copy.deepcopy(demo_cfg)
    val_ann = str(root / 'annotations/instances_val.json')
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = str(root) + '/'
        # mmdet's own class: the demo's subclass would generate a missing root
        cfg[f'{split}_dataloader'].dataset.type = 'CocoDataset'
    cfg.val_evaluator.ann_file = val_ann
    cfg.test_evaluator.ann_file = val_ann
    return root, cfg


def train_ann(root):
    return root / 'annotations/instances_train.json'


def edit_json(path, edit):
    coco = json.loads(path.read_text())
    edit(coco)
    path.write_text(json.dumps(coco))


def test_intact_dataset_passes(data):
    root, cfg = data
    assert check_data_config(cfg) == []  # nothing mmdet would drop
    check_data_config(cfg, splits=('test', ))


def test_unknown_split_is_an_error(data):
    with pytest.raises(ValueError, match=r"\['tain'\]"):
        check_data_config(data[1], splits=('tain', ))


def test_missing_data_root(data, tmp_path):
    root, cfg = data
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError) as error:
        check_data_config(cfg)
    assert str(error.value) == (
        'train_dataloader.dataset.data_root: folder '
        f"'{tmp_path / 'nowhere'}' does not exist")


def test_only_the_requested_splits_are_checked(data, tmp_path):
    root, cfg = data
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'nowhere')
    check_data_config(cfg, splits=('test', ))  # tools/test.py's check


def test_missing_image_folder(data):
    root, cfg = data
    shutil.rmtree(root / 'val')
    with pytest.raises(FileNotFoundError, match=r"val_dataloader\.dataset\."
                       r"data_prefix\.img: folder '.*/val/' does not exist"):
        check_data_config(cfg)


def test_missing_annotation_file(data):
    root, cfg = data
    train_ann(root).unlink()
    with pytest.raises(FileNotFoundError) as error:
        check_data_config(cfg)
    assert str(error.value) == (
        'train_dataloader.dataset.ann_file: annotation file '
        f"'{train_ann(root)}' does not exist")


def test_missing_evaluator_annotation_file(data, tmp_path):
    root, cfg = data
    cfg.val_evaluator.ann_file = str(tmp_path / 'gt.json')
    with pytest.raises(FileNotFoundError, match=r'val_evaluator\.ann_file: '
                       r"annotation file '.*gt\.json' does not exist"):
        check_data_config(cfg)


def test_empty_annotation_file(data):
    root, cfg = data
    train_ann(root).write_text('')
    with pytest.raises(ValueError, match=r"annotation file '.*"
                       r"instances_train\.json' is empty"):
        check_data_config(cfg)


def test_truncated_annotation_file(data):
    root, cfg = data
    text = train_ann(root).read_text()
    train_ann(root).write_text(text[:len(text) // 2])
    with pytest.raises(ValueError, match=r"instances_train\.json' is not "
                       r'valid JSON \(.*line'):
        check_data_config(cfg)


@pytest.mark.parametrize(
    'content,expected',
    [('[]', 'its top level is a list, not an object'),
     ('{}', 'it has no images, annotations, categories (top-level keys: [])'),
     ('{"images": {}, "annotations": [], "categories": []}',
      '"images" is a dict, not a list')])
def test_json_that_is_not_coco(data, content, expected):
    root, cfg = data
    train_ann(root).write_text(content)
    with pytest.raises(ValueError) as error:
        check_data_config(cfg)
    assert str(error.value) == (
        'train_dataloader.dataset.ann_file: annotation file '
        f"'{train_ann(root)}' is not COCO-format JSON: {expected}")


@pytest.mark.parametrize('key', ['images', 'annotations', 'categories'])
def test_annotation_file_listing_nothing(data, key):
    root, cfg = data
    edit_json(train_ann(root), lambda coco: coco.update({key: []}))
    with pytest.raises(ValueError, match=f'lists no {key}'):
        check_data_config(cfg)


def test_broken_entries_are_listed(data):
    root, cfg = data

    def damage(coco):
        del coco['images'][0]['file_name']
        coco['annotations'][0]['image_id'] = 999
        coco['annotations'][1]['bbox'] = [1, 2, 3]
        del coco['annotations'][2]['iscrowd']
        coco['annotations'][4]['id'] = coco['annotations'][3]['id']

    edit_json(train_ann(root), damage)
    with pytest.raises(ValueError) as error:
        check_data_config(cfg)
    message = str(error.value)
    assert 'is not COCO-format JSON (5 problems):' in message
    for problem in ('images[0] lacks file_name',
                    'annotations[4] repeats id 4',
                    'annotations[2] lacks iscrowd',
                    'annotations[0] refers to image_id 999',
                    'annotations[1] has bbox [1, 2, 3], not [x, y, w, h]'):
        assert problem in message


def test_classes_missing_from_categories(data):
    """mmdet's CocoDataset would silently drop these classes' objects."""
    root, cfg = data
    cfg.train_dataloader.dataset.metainfo = dict(
        classes=('circle', 'square', 'hexagon'))
    with pytest.raises(ValueError, match=r"1 of the dataset's 3 classes are "
                       r"not categories of .*: \['hexagon'\]"):
        check_data_config(cfg)


def test_default_coco_classes_against_other_categories(data):
    root, cfg = data
    cfg.train_dataloader.dataset.pop('metainfo')  # CocoDataset's 80 classes
    with pytest.raises(ValueError, match="80 of the dataset's 80 classes"):
        check_data_config(cfg)


@pytest.mark.parametrize('damage,reason', [
    ('missing', 'no such file'),
    ('empty', 'empty file'),
    ('text', 'not a readable image'),
    ('truncated', 'not a readable image'),
])
def test_unreadable_image(data, damage, reason):
    root, cfg = data
    image = root / 'train/000002.png'
    if damage == 'missing':
        image.unlink()
    elif damage == 'empty':
        image.write_bytes(b'')
    elif damage == 'text':
        image.write_text('not an image')
    else:
        content = image.read_bytes()
        image.write_bytes(content[:len(content) // 2])
    with pytest.raises(ValueError) as error:
        check_data_config(cfg)
    message = str(error.value)
    assert message.startswith(
        'train_dataloader.dataset: 1 of the 6 images listed in '
        f"'{train_ann(root)}' cannot be read:")
    assert f"'{image}': {reason}" in message


def test_dataset_wrappers_are_followed(data):
    root, cfg = data
    cfg.train_dataloader.dataset = dict(
        type='RepeatDataset',
        times=2,
        dataset=dict(
            type='ConcatDataset',
            datasets=[cfg.train_dataloader.dataset,
                      copy.deepcopy(cfg.val_dataloader.dataset)]))
    check_data_config(cfg)
    (root / 'val/000003.png').write_text('not an image')
    with pytest.raises(ValueError, match=r'^train_dataloader\.dataset\.dataset'
                       r'\.datasets\[1\]: 1 of the 3 images'):
        check_data_config(cfg)


# --- what mmdet does silently, reported as warnings -------------------------


def first_annotation(coco):
    return coco['annotations'][0]


def image_of(coco, ann):
    return next(i for i in coco['images'] if i['id'] == ann['image_id'])


def no_overlap(coco):
    ann = first_annotation(coco)
    image = image_of(coco, ann)
    ann['bbox'] = [image['width'] + 5, 2, 10, 10]


def narrow(coco):
    first_annotation(coco)['bbox'][2] = 0.5


def no_area(coco):
    first_annotation(coco)['area'] = 0


def nan_corner(coco):
    first_annotation(coco)['bbox'][0] = float('nan')


def partly_outside(coco):
    first_annotation(coco)['bbox'][0] = -5


def other_category(coco):
    coco['categories'].append(dict(id=99, name='not_a_demo_class'))
    first_annotation(coco)['category_id'] = 99


@pytest.mark.parametrize('edit,message', [
    (no_overlap, 'have no overlap with their image: mmdet drops them'),
    (narrow, 'have w < 1 or h < 1: mmdet drops them'),
    (no_area, 'have area <= 0: mmdet drops them'),
    (nan_corner, 'have non-finite coordinates; mmdet drops them'),
    (partly_outside, 'lie partly outside their image: mmdet keeps them '
     'unclipped'),
    (other_category, "have a category outside the dataset's classes: mmdet "
     'drops them'),
])
def test_annotations_mmdet_drops_are_reported(data, edit, message):
    root, cfg = data
    edit_json(train_ann(root), edit)
    ann_id = json.loads(train_ann(root).read_text())['annotations'][0]['id']
    warnings = check_data_config(cfg, splits=('train', ))
    assert warnings == [
        f"train_dataloader.dataset: 1 annotations of '{train_ann(root)}' "
        f'{message} (ids {ann_id})'
    ]


def test_images_left_out_by_filter_cfg_are_reported(data):
    root, cfg = data

    def drop_first_image_annotations(coco):
        first = coco['images'][0]['id']
        coco['annotations'] = [
            a for a in coco['annotations'] if a['image_id'] != first]

    edit_json(train_ann(root), drop_first_image_annotations)
    first = json.loads(train_ann(root).read_text())['images'][0]['id']
    warnings = check_data_config(cfg, splits=('train', ))
    assert warnings == [
        f"train_dataloader.dataset: 1 images of '{train_ann(root)}' have no "
        "annotation of the dataset's classes: mmdet's filter_cfg leaves them "
        f'out of training (ids {first})'
    ]


def test_sizes_that_disagree_with_the_file_are_reported(data):
    root, cfg = data

    def wider(coco):
        coco['images'][1]['width'] += 10

    edit_json(train_ann(root), wider)
    image = json.loads(train_ann(root).read_text())['images'][1]
    [warning] = check_data_config(cfg, splits=('train', ))
    assert warning.startswith(
        f"train_dataloader.dataset: 1 images of '{train_ann(root)}' have "
        'another size than the annotation file says; mmdet uses the size of '
        'the loaded image')
    size = f'{image["width"]}x{image["height"]} in the annotation file'
    assert size in warning


def truncated_jpeg(root):
    """The first training image as a JPEG cut after 60% of its bytes: its
    header is intact, its data is not."""
    from PIL import Image

    def to_jpeg(coco):
        image = coco['images'][0]
        png = root / 'train' / image['file_name']
        jpeg = png.with_suffix('.jpg')
        Image.open(png).convert('RGB').save(jpeg, quality=95)
        data = jpeg.read_bytes()
        jpeg.write_bytes(data[:len(data) * 6 // 10])
        image['file_name'] = jpeg.name

    edit_json(train_ann(root), to_jpeg)
    return root / 'train' / json.loads(
        train_ann(root).read_text())['images'][0]['file_name']


def test_truncated_jpeg_is_found_by_a_full_decode(data, tmp_path,
                                                  monkeypatch):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    root, cfg = data
    path = truncated_jpeg(root)
    check_data_config(cfg, splits=('train', ))  # the header is fine
    with pytest.raises(ValueError) as error:
        check_data_config(cfg, splits=('train', ), images='full')
    assert f"'{path}': not a readable image" in str(error.value)
    assert 'truncated' in str(error.value)


def test_full_decode_is_remembered(data, tmp_path, monkeypatch):
    """A second full check decodes nothing that did not change."""
    from PIL import ImageFile
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    root, cfg = data
    check_data_config(cfg, splits=('train', ), images='full')
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, 'load',
                        lambda self: decoded.append(self) or real_load(self))
    check_data_config(cfg, splits=('train', ), images='full')
    assert decoded == []
    image = root / 'train' / json.loads(
        train_ann(root).read_text())['images'][0]['file_name']
    image.write_bytes(image.read_bytes())  # new mtime: decoded again
    os.utime(image, ns=(1, 1))
    check_data_config(cfg, splits=('train', ), images='full')
    assert len(decoded) == 1


def test_demo_dataset_is_generated_on_first_use(demo_cfg, tmp_path):
    """DemoShapesCocoDataset makes its data when data_root is missing, and
    the pre-flight check runs it first, so the check passes and the data is
    there for the Runner."""
    cfg = copy.deepcopy(demo_cfg)
    root = tmp_path / 'fresh'
    for split in ('train', 'val', 'test'):
        assert cfg[f'{split}_dataloader'].dataset.type == 'DemoShapesCocoDataset'
        cfg[f'{split}_dataloader'].dataset.data_root = str(root) + '/'
    cfg.val_evaluator.ann_file = str(root / 'annotations/instances_val.json')
    cfg.test_evaluator.ann_file = cfg.val_evaluator.ann_file
    assert check_data_config(cfg) == []
    assert (root / 'annotations' / 'instances_train.json').is_file()
