"""check_data_config on the demo RetinaNet config and a small generated COCO
dataset, intact and damaged in each way it must report."""
import copy
import json
import os.path as osp
import shutil

import pytest
from mmengine.config import Config

from mmsoftpool.datasets.checks import check_data_config
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
    check_data_config(cfg)
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
