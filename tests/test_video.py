"""MMAction2's 3-D backbones with SoftPool (paper Section 5): built from
config through MMAction2's registry, the same state-dict keys as the
originals, pools swapped as asked, one training step on the CPU."""
import pytest
import torch

pytest.importorskip('mmaction')

from mmaction.registry import MODELS  # noqa: E402
from mmaction.utils import register_all_modules  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402

import mmsoftpool  # noqa: E402,F401  (registers the backbones)
from mmsoftpool import SoftPool3d  # noqa: E402

register_all_modules(init_default_scope=False)


def build(cfg):
    """MODELS.build in MMAction2's scope (its Conv2plus1d is found through the
    default scope), without leaving that scope set for other tests."""
    with DefaultScope.overwrite_default_scope('mmaction'):
        return MODELS.build(cfg)

# Small versions of the Table 7 backbones (depth 18 instead of 50/101 to keep
# the CPU test short; the pooling layers are the same).
BACKBONES = {
    'ResNet3d': dict(depth=18, pretrained=None, pretrained2d=False, in_channels=3,
                     base_channels=8, with_pool2=True, inflate=(1, 1, 1, 1)),
    'ResNet3dSlowOnly': dict(depth=18, pretrained=None, pretrained2d=False,
                             base_channels=8, lateral=False),
    'ResNet2Plus1d': dict(depth=18, pretrained=None, pretrained2d=False, base_channels=8,
                          conv_cfg=dict(type='Conv2plus1d'), norm_cfg=dict(type='BN3d'),
                          conv1_kernel=(3, 7, 7), conv1_stride_t=1, pool1_stride_t=1,
                          inflate=(1, 1, 1, 1), spatial_strides=(1, 2, 2, 2),
                          temporal_strides=(1, 2, 2, 2), zero_init_residual=False),
}


@pytest.mark.parametrize('name', list(BACKBONES))
def test_state_dict_keys_equal_mmaction_originals(name):
    original = build(dict(type=name, **BACKBONES[name]))
    soft = build(dict(type='SoftPool' + name, **BACKBONES[name]))
    assert list(soft.state_dict()) == list(original.state_dict())
    soft.load_state_dict(original.state_dict())  # MMAction2's weights load
    for layer in ('maxpool', 'pool2'):
        replaced, kept = getattr(soft, layer), getattr(original, layer)
        assert isinstance(replaced, SoftPool3d), layer
        # the replaced layer's geometry is kept
        for arg in ('kernel_size', 'stride', 'padding'):
            value = getattr(kept, arg)
            assert getattr(replaced, arg) == (tuple(value) if isinstance(value, tuple) else
                                              (value, ) * 3), arg


def test_pools_are_chosen_by_config():
    cfg = dict(type='SoftPoolResNet3d', **BACKBONES['ResNet3d'])
    kept = build(dict(cfg, stem_pool_cfg=None, temporal_pool_cfg=None))
    assert isinstance(kept.maxpool, torch.nn.MaxPool3d)
    assert isinstance(kept.pool2, torch.nn.MaxPool3d)
    stem_only = build(dict(cfg, temporal_pool_cfg=None))
    assert isinstance(stem_only.maxpool, SoftPool3d)
    assert isinstance(stem_only.pool2, torch.nn.MaxPool3d)
    with pytest.raises(ValueError, match='must keep the stride'):
        build(dict(cfg, stem_pool_cfg=dict(type='SoftPool3d', kernel_size=2,
                                                  stride=1)))


@pytest.mark.parametrize('name', list(BACKBONES))
def test_one_training_step_of_a_recognizer(name):
    torch.manual_seed(0)
    model = build(
        dict(type='Recognizer3D',
             backbone=dict(type='SoftPool' + name, **BACKBONES[name]),
             cls_head=dict(type='I3DHead', num_classes=4, in_channels=64),
             data_preprocessor=dict(type='ActionDataPreprocessor', format_shape='NCTHW')))
    from mmengine.optim import build_optim_wrapper
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.01)))
    from mmaction.structures import ActionDataSample
    inputs = [torch.randint(0, 255, (1, 3, 8, 32, 32), dtype=torch.uint8) for _ in range(2)]
    samples = [ActionDataSample().set_gt_label(torch.tensor([i])) for i in range(2)]
    before = [p.detach().clone() for p in model.parameters()]
    losses = model.train_step(dict(inputs=inputs, data_samples=samples), optim)
    assert torch.isfinite(losses['loss_cls'])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
