"""Every detection config parses, builds and trains one step on CPU;
the SoftPool configs differ from their max-pool baselines only in the
backbone's pooling; configs work from outside the repository."""
import copy
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from torch import nn

from helpers import TINY_DEMO, run_python, tiny_demo_overrides
from mmsoftpool import SoftPool2d

REPO = Path(__file__).resolve().parents[1]
# The detection configs (configs/pretrain/ holds the classification ones,
# tested with the classification backbones).
DETECTION_DIRS = ('retinanet', 'mask_rcnn', 'demo')
CONFIGS = sorted(p for d in DETECTION_DIRS
                 for p in (REPO / 'configs' / d).rglob('*.py')
                 if '_base_' not in p.parts)
CONFIG_IDS = [str(p.relative_to(REPO / 'configs')) for p in CONFIGS]

# Each SoftPool config of the detection issue and its max-pool baseline.
BASELINES = {
    'retinanet/retinanet_r18_softpool.py':
    'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py',
    'retinanet/retinanet_r34_softpool.py':
    'retinanet/retinanet_r34_fpn_1x_coco.py',
    'retinanet/retinanet_r50_softpool.py':
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    'retinanet/retinanet_r101_softpool.py':
    'mmdet::retinanet/retinanet_r101_fpn_1x_coco.py',
    'mask_rcnn/mask-rcnn_r34_softpool.py':
    'mask_rcnn/mask-rcnn_r34_fpn_1x_coco.py',
    'mask_rcnn/mask-rcnn_r50_softpool.py':
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    'mask_rcnn/mask-rcnn_r101_softpool.py':
    'mmdet::mask_rcnn/mask-rcnn_r101_fpn_1x_coco.py',
}
DEPTHS = {'r18': 18, 'r34': 34, 'r50': 50, 'r101': 101}


def load(name):
    """A config by its path under configs/ or as ``mmdet::...``."""
    if name.startswith('mmdet::'):
        # mmengine resolves `pkg::` in _base_ only; a one-line child does it.
        return Config.fromstring(f'_base_ = {name!r}\n', '.py')
    return Config.fromfile(REPO / 'configs' / name)


def tiny(model_cfg):
    """The model config with 3 classes and no pretrained weights to fetch."""
    model_cfg = copy.deepcopy(model_cfg)

    def visit(node):
        if isinstance(node, dict):
            if 'num_classes' in node:
                node['num_classes'] = 3
            for value in node.values():
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)

    visit(model_cfg)
    model_cfg.backbone.init_cfg = None
    return model_cfg


@pytest.fixture
def one_thread():
    """The tiny steps below run faster in one thread on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_all_issue_configs_exist():
    names = set(CONFIG_IDS)
    for name, baseline in BASELINES.items():
        assert name in names
        assert baseline.startswith('mmdet::') or baseline in names


@pytest.mark.parametrize('path', CONFIGS, ids=CONFIG_IDS)
def test_config_builds_and_trains_one_step(path, one_thread):
    """Parse, build, and one loss forward + backward on a 64x64 image."""
    from mmdet.testing import demo_mm_inputs

    cfg = Config.fromfile(path)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(tiny(cfg.model))
    model.train()

    with_mask = 'mask_head' in cfg.model.get('roi_head', {})
    packed = demo_mm_inputs(
        batch_size=1,
        image_shapes=[(3, 64, 64)],
        num_items=[2],
        num_classes=3,
        with_mask=with_mask)
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    if with_mask:
        assert 'loss_mask' in losses
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    grads = {
        name: param.grad
        for name, param in model.backbone.named_parameters()
        if param.requires_grad
    }
    assert all(grad is not None for grad in grads.values())
    assert any(grad.abs().sum() > 0 for name, grad in grads.items()
               if name.startswith('layer4'))
    # Unless the config freezes the stem (frozen_stages >= 0), the gradient
    # reaches it through the stem pooling layer.
    stem_grads = [
        grad for name, grad in grads.items() if not name.startswith('layer')
    ]
    assert all(grad.abs().sum() > 0 for grad in stem_grads)

    stem_pool = model.backbone.maxpool
    if 'softpool' in path.name:
        assert isinstance(stem_pool, SoftPool2d)
    else:
        assert isinstance(stem_pool, nn.MaxPool2d)


@pytest.mark.parametrize('name', sorted(BASELINES))
def test_softpool_config_differs_from_baseline_only_in_pooling(name):
    cfg, baseline = load(name), load(BASELINES[name])
    depth = DEPTHS[Path(name).stem.split('_')[1]]
    assert cfg.model.backbone.depth == depth
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint=f'torchvision://resnet{depth}')
    assert cfg.custom_imports == dict(
        imports=['mmsoftpool'], allow_failed_imports=False)

    # Undo the pooling swap: what remains is the baseline config, so data,
    # schedule, evaluation and runtime are MMDetection's own.
    softpool = cfg.to_dict()
    softpool.pop('custom_imports')
    # and its checkpoints are written atomically (docs/checkpoints.md)
    assert softpool['default_hooks']['checkpoint'].pop('type') == \
        'AtomicCheckpointHook'
    baseline = baseline.to_dict()
    baseline.pop('custom_imports', None)
    assert baseline['default_hooks']['checkpoint'].pop('type') in (
        'CheckpointHook', 'AtomicCheckpointHook')
    backbone = softpool['model']['backbone']
    assert backbone['type'] == 'SoftPoolResNet'
    # the default stem, stated once (by SoftPoolResNet), builds the swap
    init_default_scope('mmdet')
    stem = MODELS.build(dict(backbone, init_cfg=None)).maxpool
    assert isinstance(stem, SoftPool2d)
    assert (stem.kernel_size, stem.stride) == ((2, 2), (2, 2))
    backbone['type'] = 'ResNet'
    assert softpool == baseline

    # COCO 2017 under data/coco/, COCO AP (bbox, plus segm for Mask R-CNN).
    assert cfg.train_dataloader.dataset.type == 'CocoDataset'
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    assert cfg.train_dataloader.dataset.ann_file == \
        'annotations/instances_train2017.json'
    assert cfg.val_evaluator.type == 'CocoMetric'
    assert cfg.val_evaluator.ann_file == \
        'data/coco/annotations/instances_val2017.json'
    metrics = cfg.val_evaluator.metric
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    assert metrics == (['bbox', 'segm'] if 'mask' in name else ['bbox'])
    assert cfg.train_cfg.max_epochs == 12  # 1x


# --- from a user's own project (outside the repository) --------------------


def run_outside(code, cwd):
    """Runs ``code`` from ``cwd`` as a user's script would (no PYTHONPATH)."""
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)
    return run_python(code, cwd=cwd, env=env, check=False)


def test_custom_imports_from_a_config_outside_the_repository(tmp_path):
    (tmp_path / 'my_retinanet.py').write_text(
        textwrap.dedent("""\
            _base_ = 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'
            custom_imports = dict(
                imports=['mmsoftpool'], allow_failed_imports=False)
            model = dict(backbone=dict(type='SoftPoolResNet', init_cfg=None))
            """))
    result = run_outside(
        """\
        import sys
        from mmengine.config import Config
        from mmengine.registry import MODELS, init_default_scope
        cfg = Config.fromfile('my_retinanet.py')
        assert 'mmsoftpool' in sys.modules  # imported by custom_imports
        init_default_scope(cfg.default_scope)
        model = MODELS.build(cfg.model)
        print(type(model.backbone).__name__,
              type(model.backbone.maxpool).__name__)
        """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['SoftPoolResNet', 'SoftPool2d']


def test_packaged_configs_as_base_from_outside_the_repository(tmp_path):
    """``_base_ = 'mmsoftpool::...'`` resolves to the installed package's
    copy of configs/ (``mmsoftpool/.mim/configs``, as MMDetection ships its
    configs)."""
    (tmp_path / 'my_config.py').write_text(
        textwrap.dedent("""\
            _base_ = 'mmsoftpool::mask_rcnn/mask-rcnn_r34_softpool.py'
            model = dict(backbone=dict(init_cfg=None))
            """))
    result = run_outside(
        """\
        import mmsoftpool
        from mmengine.config import Config
        cfg = Config.fromfile('my_config.py')
        print(cfg.model.backbone.type, cfg.model.backbone.depth,
              cfg.model.neck.in_channels)
        """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        'SoftPoolResNet', '34', '[64,', '128,', '256,', '512]'
    ]


@pytest.mark.slow
@pytest.mark.parametrize('base,metric', [
    ('demo/retinanet_r18_softpool_demo.py', 'coco/bbox_mAP'),
    ('pretrain/demo/resnet18_softpool_demo.py', 'accuracy/top1'),
])
def test_config_inheriting_a_demo_config_trains_from_a_user_folder(
        tmp_path, base, metric):
    """``_base_ = 'mmsoftpool::...'``: MMEngine scopes the dicts our files
    define to ``mmsoftpool``; they must resolve in mmdet's (detection) or
    mmpretrain's (classification) registries. One epoch through the
    project's tools/train.py, from the user's folder."""
    from mmsoftpool.datasets.demo import generate_demo_dataset
    generate_demo_dataset(str(tmp_path / 'det'), **TINY_DEMO)
    overrides = (tiny_demo_overrides(str(tmp_path / 'det') + '/')
                 if base.startswith('demo') else
                 'train_cfg = dict(max_epochs=1, val_interval=1)\n')
    (tmp_path / 'mine.py').write_text(f"_base_ = 'mmsoftpool::{base}'\n" + overrides)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('PYTHONPATH', None)
    result = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'train.py'), 'mine.py',
         '--work-dir', 'work'], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert f'{metric}:' in log
    assert 'mmsoftpool.version' not in log  # MMEngine's scope warning


def readme_python_blocks():
    text = (REPO / 'README.md').read_text()
    return re.findall(r'```python\n(.*?)```', text, re.S)


def test_readme_examples_run_from_a_user_folder(tmp_path):
    """The README's two examples as a user runs them, outside the checkout: the
    PyTorch one, and its mmdet config built as mmdet's tools build it (the
    base from mmdet's package, the plugin by custom_imports)."""
    torch_example, config = readme_python_blocks()
    run_python(torch_example, cwd=tmp_path)
    (tmp_path / 'my_retinanet.py').write_text(config)
    result = run_python("""
        from mmengine.config import Config
        from mmdet.utils import register_all_modules
        register_all_modules()
        from mmdet.registry import MODELS
        cfg = Config.fromfile('my_retinanet.py')
        cfg.model.backbone.init_cfg = None  # no download: the weights do not matter here
        model = MODELS.build(cfg.model)
        print(type(model.backbone).__name__, model.backbone.maxpool)
        """, cwd=tmp_path)
    assert result.stdout.split('\n')[0] == (
        'SoftPoolResNet SoftPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0), '
        'ceil_mode=False)')
