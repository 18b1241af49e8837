"""SoftPool backbones for MMDetection: the pooling swap, state-dict keys,
checkpoint loading and the errors for bad pooling configs."""
import pytest
import torch
from mmdet.models.backbones import ResNet, ResNetV1d, ResNeXt
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.runner.checkpoint import load_checkpoint
from torch import nn

from mmsoftpool import SoftPool2d
from mmsoftpool.models import SoftPoolResNet, SoftPoolResNetV1d, SoftPoolResNeXt

# (SoftPool class, vanilla class, constructor arguments); small depths
# keep the tests fast, the mechanism does not depend on depth.
PAIRS = [
    (SoftPoolResNet, ResNet, dict(depth=18)),
    (SoftPoolResNet, ResNet, dict(depth=50)),
    (SoftPoolResNetV1d, ResNetV1d, dict(depth=50)),
    (SoftPoolResNeXt, ResNeXt, dict(depth=50, groups=32, base_width=4)),
]
PAIR_IDS = ['ResNet-18', 'ResNet-50', 'ResNetV1d-50', 'ResNeXt-50']


def twins(softpool_cls, vanilla_cls, kwargs, **pool_cfgs):
    """A vanilla backbone and its SoftPool twin with the same weights."""
    torch.manual_seed(0)
    vanilla = vanilla_cls(**kwargs)
    softpool = softpool_cls(**kwargs, **pool_cfgs)
    softpool.load_state_dict(vanilla.state_dict(), strict=True)
    # (mmdet's ResNet.train() returns None, so no chained .eval())
    vanilla.eval()
    softpool.eval()
    return vanilla, softpool


def pools_of(model):
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, SoftPool2d))
    }


@pytest.mark.parametrize(
    'softpool_cls,vanilla_cls,kwargs', PAIRS, ids=PAIR_IDS)
def test_default_swaps_only_the_stem(softpool_cls, vanilla_cls, kwargs):
    vanilla, softpool = twins(softpool_cls, vanilla_cls, kwargs)
    assert list(softpool.state_dict()) == list(vanilla.state_dict())
    assert isinstance(softpool.maxpool, SoftPool2d)
    assert (softpool.maxpool.kernel_size, softpool.maxpool.stride,
            softpool.maxpool.padding) == ((2, 2), (2, 2), (0, 0))
    # Every other pooling layer (V1d's shortcut pools) is left as it was.
    other_pools = {n: type(m) for n, m in pools_of(softpool).items()}
    assert other_pools.pop('maxpool') is SoftPool2d
    assert other_pools == {
        n: type(m)
        for n, m in pools_of(vanilla).items() if n != 'maxpool'
    }

    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs, vanilla_outs = softpool(x), vanilla(x)
        stem = vanilla.stem(x) if vanilla.deep_stem else vanilla.relu(
            vanilla.norm1(vanilla.conv1(x)))
    assert [o.shape for o in outs] == [o.shape for o in vanilla_outs]
    # The swapped layer is what runs: same weights, different outputs, and
    # the stem output is SoftPool of the stem activations.
    assert not torch.allclose(outs[0], vanilla_outs[0])
    expected = torch.nn.functional.softmax(
        stem.unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2), dim=-1)
    expected = (expected * stem.unfold(2, 2, 2).unfold(3, 2,
                                                       2).flatten(-2)).sum(-1)
    torch.testing.assert_close(softpool.maxpool(stem), expected)


def test_no_pool_cfg_is_the_vanilla_backbone():
    vanilla, softpool = twins(
        SoftPoolResNetV1d, ResNetV1d, dict(depth=50), stem_pool_cfg=None)
    assert {n: type(m) for n, m in pools_of(softpool).items()} == \
        {n: type(m) for n, m in pools_of(vanilla).items()}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for out, ref in zip(softpool(x), vanilla(x)):
            torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize('size', [64, 65])
def test_stem_kernel_3_padding_1(size):
    """The max-pool's own geometry also works; shapes match max-pool's."""
    vanilla, softpool = twins(
        SoftPoolResNet,
        ResNet,
        dict(depth=18),
        stem_pool_cfg=dict(
            type='SoftPool2d', kernel_size=3, stride=2, padding=1))
    assert softpool.maxpool.kernel_size == (3, 3)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert [o.shape for o in softpool(x)] == [o.shape for o in vanilla(x)]


def test_stem_geometry_copied_when_kernel_left_out():
    model = SoftPoolResNet(depth=18, stem_pool_cfg=dict(type='SoftPool2d'))
    pool = model.maxpool
    assert (pool.kernel_size, pool.stride, pool.padding,
            pool.ceil_mode) == ((3, 3), (2, 2), (1, 1), False)


@pytest.mark.parametrize('size', [64, 67])
def test_v1d_down_pool_cfg(size):
    vanilla, softpool = twins(
        SoftPoolResNetV1d,
        ResNetV1d,
        dict(depth=50),
        down_pool_cfg=dict(type='SoftPool2d'))
    assert list(softpool.state_dict()) == list(vanilla.state_dict())
    vanilla_pools = pools_of(vanilla)
    swapped = {
        n: m
        for n, m in pools_of(softpool).items() if n.endswith('downsample.0')
    }
    assert sorted(swapped) == [
        'layer1.0.downsample.0', 'layer2.0.downsample.0',
        'layer3.0.downsample.0', 'layer4.0.downsample.0'
    ]
    for name, pool in swapped.items():
        old = vanilla_pools[name]
        assert isinstance(old, nn.AvgPool2d) and isinstance(pool, SoftPool2d)
        # Each keeps its stage's kernel (1 in layer1, 2 after) and ceil_mode.
        assert pool.kernel_size == (old.kernel_size, ) * 2
        assert pool.stride == (old.stride, ) * 2
        assert pool.ceil_mode == old.ceil_mode is True
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        outs, vanilla_outs = softpool(x), vanilla(x)
    assert [o.shape for o in outs] == [o.shape for o in vanilla_outs]


def test_registered_in_mmdet_and_built_from_config():
    for name in ('SoftPoolResNet', 'SoftPoolResNetV1d', 'SoftPoolResNeXt'):
        assert MMDET_MODELS.get(name) is not None, name
    model = MMDET_MODELS.build(
        dict(
            type='SoftPoolResNetV1d',
            depth=18,
            stem_pool_cfg=dict(type='SoftPool2d', kernel_size=3, stride=2),
            down_pool_cfg=dict(type='SoftPool2d')))
    assert model.maxpool.kernel_size == (3, 3)
    assert isinstance(model.layer2[0].downsample[0], SoftPool2d)


# --- a vanilla checkpoint loads with the same report -----------------------


@pytest.mark.parametrize('depth', [18, 50])
def test_torchvision_checkpoint_same_load_report(tmp_path, depth):
    """torchvision's ResNet weights (made locally, same keys as the released
    files): only fc.* is unexpected, as for MMDetection's own ResNet."""
    torchvision = pytest.importorskip('torchvision')
    torch.manual_seed(0)
    tv_model = getattr(torchvision.models, f'resnet{depth}')(weights=None)
    ckpt = tmp_path / f'resnet{depth}.pth'
    torch.save(tv_model.state_dict(), ckpt)

    reports = {}
    for cls in (ResNet, SoftPoolResNet):
        with pytest.raises(RuntimeError) as error:
            load_checkpoint(cls(depth=depth), str(ckpt), strict=True)
        reports[cls] = str(error.value)
        result = cls(depth=depth).load_state_dict(
            tv_model.state_dict(), strict=False)
        assert result.missing_keys == []
        assert result.unexpected_keys == ['fc.weight', 'fc.bias']
    assert 'unexpected key in source state_dict: fc.weight, fc.bias' in \
        reports[ResNet]
    assert reports[SoftPoolResNet] == reports[ResNet]

    # The path a config takes: init_cfg=dict(type='Pretrained', ...).
    model = SoftPoolResNet(
        depth=depth, init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    model.init_weights()
    torch.testing.assert_close(model.conv1.weight, tv_model.conv1.weight)
    torch.testing.assert_close(model.layer4[-1].bn1.running_var,
                               tv_model.layer4[-1].bn1.running_var)


def test_softpool_checkpoint_loads_into_vanilla(tmp_path):
    """And back: weights trained with SoftPool load into the max-pool model
    without any missing or unexpected key."""
    torch.manual_seed(0)
    softpool = SoftPoolResNeXt(depth=50, groups=32, base_width=4)
    ckpt = tmp_path / 'softpool.pth'
    torch.save({'state_dict': softpool.state_dict()}, ckpt)
    vanilla = ResNeXt(depth=50, groups=32, base_width=4)
    load_checkpoint(vanilla, str(ckpt), strict=True)
    torch.testing.assert_close(vanilla.layer3[0].conv2.weight,
                               softpool.layer3[0].conv2.weight)


# --- bad pooling configs fail at build time, naming argument and value -----


def test_unknown_pool_type():
    with pytest.raises(ValueError) as error:
        SoftPoolResNet(depth=18, stem_pool_cfg=dict(type='SoftPool', stride=2))
    message = str(error.value)
    assert 'SoftPoolResNet: stem_pool_cfg=' in message
    assert "unknown pooling type 'SoftPool'" in message
    assert 'SoftPool2d' in message


def test_unknown_pool_type_through_mmdet_config():
    with pytest.raises(ValueError, match="down_pool_cfg=.*'SoftPooling2d'"):
        MMDET_MODELS.build(
            dict(
                type='SoftPoolResNetV1d',
                depth=18,
                down_pool_cfg=dict(type='SoftPooling2d')))


@pytest.mark.parametrize('cfg', ['SoftPool2d', dict(kernel_size=2)])
def test_pool_cfg_must_be_a_dict_with_type(cfg):
    with pytest.raises(TypeError, match='stem_pool_cfg must be a dict'):
        SoftPoolResNet(depth=18, stem_pool_cfg=cfg)


def test_down_pool_cfg_without_avg_down():
    with pytest.raises(ValueError) as error:
        SoftPoolResNet(depth=18, down_pool_cfg=dict(type='SoftPool2d'))
    message = str(error.value)
    assert 'down_pool_cfg' in message and 'avg_down=True' in message


def test_replacement_must_keep_the_stride():
    with pytest.raises(
            ValueError, match=r'stride \(1, 1\).*maxpool has stride 2'):
        SoftPoolResNet(
            depth=18,
            stem_pool_cfg=dict(type='SoftPool2d', kernel_size=3, stride=1))
    # A fixed kernel for every shortcut pool would change layer1's stride.
    with pytest.raises(
            ValueError, match=r'layer1\.0\.downsample\.0 has stride'):
        SoftPoolResNetV1d(
            depth=50, down_pool_cfg=dict(type='SoftPool2d', kernel_size=2))


def test_invalid_softpool_arguments_are_reported():
    with pytest.raises(ValueError, match='padding'):
        SoftPoolResNet(
            depth=18,
            stem_pool_cfg=dict(
                type='SoftPool2d', kernel_size=2, stride=2, padding=2))


def test_bfloat16_autocast_runs_the_stem_softpool_in_its_input_dtype():
    """Under CPU bfloat16 autocast the stem SoftPool runs in the dtype it is
    given (the convolution's bfloat16), as max_pool does: autocast casts
    nothing for it, so output and input gradient are the op's own bfloat16
    results, and the whole backward runs."""
    torch.manual_seed(0)
    model = SoftPoolResNet(depth=18)
    model.train()
    seen = {}

    def hook(module, args, output):
        seen['input'], seen['output'] = args[0], output
        args[0].register_hook(lambda g: seen.setdefault('grad_input', g))
        output.register_hook(lambda g: seen.setdefault('grad_output', g))

    model.maxpool.register_forward_hook(hook)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = sum(out.float().square().mean() for out in model(torch.randn(2, 3, 64, 64)))
    loss.backward()
    x = seen['input'].detach()
    assert x.dtype == seen['output'].dtype == torch.bfloat16
    assert torch.equal(seen['output'].detach(), SoftPool2d(2, 2)(x))
    assert seen['grad_output'].dtype == seen['grad_input'].dtype == torch.bfloat16
    xg = x.clone().requires_grad_()
    (expected, ) = torch.autograd.grad(SoftPool2d(2, 2)(xg), xg, seen['grad_output'])
    assert torch.equal(seen['grad_input'], expected)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.conv1.weight.grad is not None


def test_cpu_amp_optim_wrapper_trains_the_stem_in_bfloat16():
    """CPUAmpOptimWrapper (MMEngine's AmpOptimWrapper needs a GPU): the
    forward in its context runs under CPU bfloat16 autocast, the step updates
    float32 weights; another dtype is refused, naming it."""
    from mmengine.registry import OPTIM_WRAPPERS

    import mmsoftpool.engine  # noqa: F401  registers it
    torch.manual_seed(0)
    model = SoftPoolResNet(depth=18)
    model.train()
    wrapper = OPTIM_WRAPPERS.build(dict(
        type='CPUAmpOptimWrapper', optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
    seen = {}
    model.maxpool.register_forward_hook(lambda m, args, out: seen.update(dtype=out.dtype))
    before = model.conv1.weight.detach().clone()
    with wrapper.optim_context(model):
        loss = sum(out.float().square().mean() for out in model(torch.randn(2, 3, 64, 64)))
    wrapper.update_params(loss)
    assert seen['dtype'] == torch.bfloat16
    assert model.conv1.weight.dtype == torch.float32
    assert not torch.equal(model.conv1.weight.detach(), before)
    with pytest.raises(ValueError, match="dtype='float16'"):
        OPTIM_WRAPPERS.build(dict(type='CPUAmpOptimWrapper', dtype='float16',
                                  optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
