"""check_data_config on the demo RetinaNet config and a small generated COCO
dataset, intact and damaged in each way it must report."""
import copy
import json
import os
import os.path as osp
import shutil

import pytest
from mmengine.config import Config

from mmsoftpool.datasets.demo import generate_demo_dataset
from mmsoftpool.tools.data_checks import check_data_config

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


@pytest.mark.parametrize('record,field,value,expected', [
    ('images', 'id', [1], 'images[0] has id [1], not an integer'),
    ('images', 'id', 1.5, 'images[0] has id 1.5, not an integer'),
    ('annotations', 'id', {'a': 1},
     "annotations[0] has id {'a': 1}, not an integer"),
    ('categories', 'id', '1', "categories[0] has id '1', not an integer"),
    ('annotations', 'image_id', [1],
     'annotations[0] has image_id [1], not an integer'),
    ('annotations', 'category_id', True,  # bool is an int in Python
     'annotations[0] has category_id True, not an integer'),
    ('categories', 'name', ['circle'],
     "categories[0] has name ['circle'], not a string"),
    ('images', 'file_name', 7, 'images[0] has file_name 7, not a string'),
    ('images', 'width', '128', "images[0] has width '128', not a finite "
     'number'),
    ('images', 'height', None, 'images[0] has height None, not a finite '
     'number'),
    ('images', 'width', float('inf'), 'images[0] has width inf, not a '
     'finite number'),
    ('annotations', 'area', '5', "annotations[0] has area '5', not a finite "
     'number'),
    # json reads 10**400 as an int no float holds; the message cuts it short
    ('annotations', 'bbox', [10**400, 2, 3, 4], 'annotations[0] has bbox [1'
     + '0' * 55 + '..., not [x, y, w, h] of numbers'),
    ('annotations', 'bbox', [True, 2, 3, 4], 'annotations[0] has bbox '
     '[True, 2, 3, 4], not [x, y, w, h] of numbers'),
    ('annotations', 'iscrowd', '0', "annotations[0] has iscrowd '0', not 0 "
     'or 1'),
])
def test_fields_of_another_type_are_listed(data, record, field, value,
                                           expected):
    """Each one was a traceback (unhashable id, a list as a name, a string
    width) or passed unnoticed (a bool in a box, a float id)."""
    root, cfg = data
    edit_json(train_ann(root), lambda coco: coco[record][0].update(
        {field: value}))
    with pytest.raises(ValueError) as error:
        check_data_config(cfg, splits=('train', ))
    message = str(error.value)
    assert message.startswith(
        'train_dataloader.dataset.ann_file: annotation file '
        f"'{train_ann(root)}' is not COCO-format JSON (")
    assert f'\n  {expected}' in message


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


def rotated_jpeg(root, orientation):
    """The first training image, 128x128, widened to 160x128 (its boxes stay
    inside) and saved as a JPEG with the EXIF orientation tag; the
    annotation file gives the stored size, 160x128."""
    from PIL import Image

    def to_jpeg(coco):
        image = coco['images'][0]
        png = root / 'train' / image['file_name']
        jpeg = png.with_suffix('.jpg')
        wide = Image.new('RGB', (160, 128))
        wide.paste(Image.open(png).convert('RGB'))
        exif = Image.Exif()
        exif[0x0112] = orientation
        wide.save(jpeg, exif=exif)
        image.update(file_name=jpeg.name, width=160, height=128)

    edit_json(train_ann(root), to_jpeg)
    return root / 'train' / json.loads(
        train_ann(root).read_text())['images'][0]['file_name']


@pytest.mark.parametrize('orientation', [1, 3, 5, 6, 7, 8])
def test_size_is_compared_as_mmcv_loads_the_image(data, orientation):
    """mmcv (LoadImageFromFile's defaults: cv2, color_type='color') turns
    the image by its EXIF orientation; PIL's size is the stored one."""
    import mmcv
    root, cfg = data
    path = rotated_jpeg(root, orientation)
    quarter_turn = orientation in (5, 6, 7, 8)
    assert mmcv.imread(str(path)).shape[:2] == (
        (160, 128) if quarter_turn else (128, 160))  # (height, width)
    warnings = check_data_config(cfg, splits=('train', ))
    if not quarter_turn:
        assert warnings == []
        return
    [warning] = warnings
    assert warning.startswith(
        f"train_dataloader.dataset: 1 images of '{train_ann(root)}' have "
        'another size than the annotation file says')
    assert warning.endswith(
        f"\n  '{path}': 160x128 in the annotation file, 128x160 as mmcv "
        f'loads it (EXIF orientation {orientation} turns the stored 160x128)')


def test_exif_orientation_is_ignored_where_the_pipeline_ignores_it(data):
    import mmcv
    root, cfg = data
    path = rotated_jpeg(root, 6)
    assert mmcv.imread(str(path), flag='unchanged').shape[:2] == (128, 160)
    cfg.train_dataloader.dataset.pipeline[0].color_type = 'unchanged'
    assert check_data_config(cfg, splits=('train', )) == []


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


@pytest.mark.parametrize('content', [
    b'{"/data/train/000001.png": "5',  # cut short
    b'\xff\xfe not utf-8',
    b'[1, 2]',
    b'{"/data/train/000001.png": 1}',  # not ours
])
def test_damaged_decoded_cache_is_ignored_and_rewritten(
        data, tmp_path, monkeypatch, content):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    root, cfg = data
    assert check_data_config(cfg, splits=('train', ), images='full') == []
    [cache] = (tmp_path / 'cache').rglob('*.json')
    cache.write_bytes(content)
    [warning] = check_data_config(cfg, splits=('train', ), images='full')
    assert warning.startswith(
        "train_dataloader.dataset: the cache of decoded images "
        f"'{cache}' is damaged (")
    assert warning.endswith('); it is ignored and rewritten')
    assert len(json.loads(cache.read_text())) == 6  # the training images
    assert check_data_config(cfg, splits=('train', ), images='full') == []


def test_unwritable_decoded_cache_is_skipped(data, tmp_path, monkeypatch):
    cache_home = tmp_path / 'cache'
    cache_home.mkdir()
    (cache_home / 'mmsoftpool').write_text('a file where a folder must be')
    monkeypatch.setenv('XDG_CACHE_HOME', str(cache_home))
    root, cfg = data
    for _ in range(2):  # nothing remembered: each run decodes and warns
        [warning] = check_data_config(cfg, splits=('train', ), images='full')
        assert warning.startswith(
            'train_dataloader.dataset: cannot write the cache of decoded '
            f"images '{cache_home}/mmsoftpool/decoded_images/")
        assert warning.endswith('the next full check decodes them again')


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
