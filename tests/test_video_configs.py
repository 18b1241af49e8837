"""The Table 7 video configs (configs/video/): each SoftPool config differs
from its max-pool baseline only in the backbone's type, builds through
MMAction2's registry with the baseline's state-dict keys and pooling
geometry, and trains one step on the CPU; the demo configs build too."""
import copy
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmaction')

from mmaction.registry import MODELS  # noqa: E402
from mmaction.utils import register_all_modules  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402

from mmsoftpool import SoftPool3d  # noqa: E402

register_all_modules(init_default_scope=False)
VIDEO = Path(__file__).resolve().parents[1] / 'configs' / 'video'
# Table 7's SoftPool rows, each with its max-pool baseline.
BASELINES = {
    'i3d_r50-softpool_8xb8-32x2x1-100e_kinetics700-rgb.py':
    'i3d_r50_8xb8-32x2x1-100e_kinetics700-rgb.py',
    'r2plus1d_r50-softpool_8xb8-8x8x1-180e_kinetics700-rgb.py':
    'r2plus1d_r50_8xb8-8x8x1-180e_kinetics700-rgb.py',
    'slowonly_r101-softpool_8xb16-8x8x1-196e_kinetics700-rgb.py':
    'slowonly_r101_8xb16-8x8x1-196e_kinetics700-rgb.py',
}
FINETUNE = {
    'i3d_r50-softpool_8xb8-32x2x1-45e_ucf101-split1-rgb.py':
    'i3d_r50-softpool_8xb8-32x2x1-100e_kinetics700-rgb.py',
    'r2plus1d_r50-softpool_8xb8-8x8x1-45e_ucf101-split1-rgb.py':
    'r2plus1d_r50-softpool_8xb8-8x8x1-180e_kinetics700-rgb.py',
    'slowonly_r101-softpool_8xb16-8x8x1-45e_ucf101-split1-rgb.py':
    'slowonly_r101-softpool_8xb16-8x8x1-196e_kinetics700-rgb.py',
}
DEMO = ('demo/r3d18_softpool_demo.py', 'demo/r3d18_maxpool_demo.py')


def load(name):
    return Config.fromfile(VIDEO / name)


def build(model_cfg):
    with DefaultScope.overwrite_default_scope('mmaction'):
        return MODELS.build(model_cfg)


def test_every_video_config_is_listed():
    found = {str(p.relative_to(VIDEO)) for p in VIDEO.rglob('*.py')
             if p.parent.name != '_base_'}
    listed = set(BASELINES) | set(BASELINES.values()) | set(FINETUNE) | set(
        DEMO)
    assert found == listed


@pytest.mark.parametrize('name', sorted(BASELINES))
def test_softpool_config_differs_from_baseline_only_in_pooling(name):
    soft, base = load(name).to_dict(), load(BASELINES[name]).to_dict()
    assert soft.pop('custom_imports') == dict(
        imports=['mmsoftpool'], allow_failed_imports=False)
    assert soft['model']['backbone'].pop('type') == \
        'SoftPool' + base['model']['backbone'].pop('type')
    assert soft == base


@pytest.mark.parametrize('name', sorted(BASELINES))
def test_softpool_model_has_the_baseline_keys_and_geometry(name):
    soft_cfg, base_cfg = load(name), load(BASELINES[name])
    soft, base = build(soft_cfg.model), build(base_cfg.model)
    assert list(soft.state_dict()) == list(base.state_dict())
    pools = [n for n, m in base.backbone.named_modules()
             if isinstance(m, torch.nn.MaxPool3d)]
    assert 'maxpool' in pools
    for pool_name in pools:  # every max-pool is swapped, geometry kept
        replaced = soft.backbone.get_submodule(pool_name)
        kept = base.backbone.get_submodule(pool_name)
        assert isinstance(replaced, SoftPool3d), pool_name
        for arg in ('kernel_size', 'stride', 'padding'):
            value = getattr(kept, arg)
            value = tuple(value) if isinstance(value, (tuple, list)) else \
                (value, ) * 3
            assert tuple(getattr(replaced, arg)) == value, (pool_name, arg)


@pytest.mark.parametrize('name', sorted(BASELINES))
def test_softpool_config_trains_one_step(name):
    """One loss forward + backward of the full-size model on a small clip
    (8 frames of 64x64), with 4 classes."""
    model_cfg = copy.deepcopy(load(name).model)
    model_cfg.cls_head.num_classes = 4
    torch.manual_seed(0)
    model = build(model_cfg)
    model.train()
    from mmaction.structures import ActionDataSample
    sample = ActionDataSample().set_gt_label(torch.tensor([2]))
    data = model.data_preprocessor(
        dict(inputs=[torch.randint(0, 256, (1, 3, 8, 64, 64),
                                   dtype=torch.uint8)],
             data_samples=[sample]), True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    stem = next(model.backbone.conv1.parameters()).grad
    assert stem is not None and stem.abs().sum() > 0  # through the SoftPool


@pytest.mark.parametrize('name', sorted(FINETUNE))
def test_ucf101_configs_fine_tune_their_kinetics_parent(name):
    cfg, parent = load(name), load(FINETUNE[name])
    assert cfg.model.cls_head.num_classes == 101
    assert cfg.load_from.startswith(
        f'work_dirs/{Path(FINETUNE[name]).stem}/epoch_')
    assert cfg.load_from.endswith(f'_{parent.train_cfg.max_epochs}.pth')
    assert cfg.model.backbone == parent.model.backbone
    for split in ('train', 'val', 'test'):
        dataset = cfg[f'{split}_dataloader'].dataset
        assert dataset.ann_file.startswith('data/ucf101/ucf101_')
        assert 'split_1' in dataset.ann_file
        assert dataset.pipeline == parent[f'{split}_dataloader'].dataset.pipeline
    assert cfg.train_cfg.max_epochs == 45


def test_demo_twins_differ_only_in_pooling():
    soft, base = (load(n).to_dict() for n in DEMO)
    assert soft['model']['backbone'].pop('type') == 'SoftPoolResNet3d'
    assert base['model']['backbone'].pop('type') == 'ResNet3d'
    assert soft == base
    model = build(load(DEMO[0]).model)
    assert isinstance(model.backbone.maxpool, SoftPool3d)
    assert isinstance(model.backbone.pool2, SoftPool3d)


def test_metafile_lists_every_table7_config():
    import yaml
    with open(VIDEO / 'metafile.yml') as f:
        listed = [m['Config'] for m in yaml.safe_load(f)['Models']]
    assert sorted(listed) == sorted(
        f'configs/video/{n}'
        for n in set(BASELINES) | set(BASELINES.values()) | set(FINETUNE))
    with open(VIDEO.parents[1] / 'model-index.yml') as f:
        assert 'configs/video/metafile.yml' in yaml.safe_load(f)['Import']


@pytest.mark.slow
def test_config_inheriting_the_video_demo_trains_from_a_user_folder(tmp_path):
    """``_base_ = 'mmsoftpool::video/demo/...'``: MMEngine scopes the dicts
    our file defines to ``mmsoftpool``; they must resolve in MMAction2's
    registries. One epoch through the project's tools/train.py, from the
    user's folder, on a few generated clips."""
    import os
    import subprocess
    import sys
    small = 'dict(dataset=dict(num_train_per_class=2, num_val_per_class=1))'
    (tmp_path / 'mine.py').write_text(
        "_base_ = 'mmsoftpool::video/demo/r3d18_softpool_demo.py'\n"
        'train_cfg = dict(max_epochs=1, val_interval=1)\n'
        f'train_dataloader = {small}\nval_dataloader = {small}\n'
        f'test_dataloader = {small}\n')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('PYTHONPATH', None)
    result = subprocess.run(
        [sys.executable, str(VIDEO.parents[1] / 'tools' / 'train.py'),
         'mine.py', '--work-dir', 'work'], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert 'acc/top1:' in log
    assert 'mmsoftpool.version' not in log  # MMEngine's scope warning
    assert (tmp_path / 'data' / 'demo_video' / 'meta.json').is_file()
