"""Classification pre-training (MMPretrain): the SoftPool backbones, every
config under configs/pretrain, the generated dataset, and the embedded run
through tools/train.py and tools/test.py whose checkpoint initialises a
SoftPool RetinaNet."""
import functools
import glob
import importlib.util
import json
import os.path as osp
import sys

import mmengine.config.utils
import pytest
import torch
from mmdet.registry import MODELS as DET_MODELS
from mmengine.config import Config
from mmengine.fileio import load
from mmengine.runner.checkpoint import _load_checkpoint_with_prefix
from mmpretrain.models.backbones import DenseNet, InceptionV3, ResNet, ResNeXt
from mmpretrain.registry import MODELS
from scipy.stats import binomtest
from torch import nn

from helpers import run_python
from mmsoftpool import SoftPool2d
from mmsoftpool.datasets.demo import (
    DemoShapesDataset,
    ensure_classification_demo,
    generate_classification_demo,
)
from mmsoftpool.models.classification import (
    INCEPTION_V3_POOL_SITES,
    SoftPoolDenseNet,
    SoftPoolInceptionV3,
    SoftPoolResNet,
    SoftPoolResNeXt,
)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PRETRAIN = osp.join(REPO_ROOT, 'configs', 'pretrain')
IMAGENET_CONFIGS = sorted(
    osp.basename(p) for p in glob.glob(osp.join(PRETRAIN, '*_in1k.py')))
DEMO_CONFIGS = [
    'demo/resnet18_maxpool_demo.py', 'demo/resnet18_softpool_demo.py'
]
VANILLA = {
    SoftPoolResNet: ResNet,
    SoftPoolResNeXt: ResNeXt,
    SoftPoolDenseNet: DenseNet,
    SoftPoolInceptionV3: InceptionV3,
}
POOLS = (nn.MaxPool2d, nn.AvgPool2d, SoftPool2d)
# Table 6 of the paper: its columns replace the sites cumulatively.
TABLE6_COLUMNS = ['N', 'I', 'II', 'III', 'IV', 'V', 'VI', 'VII']
SITES = list(INCEPTION_V3_POOL_SITES)


@pytest.fixture(scope='module', autouse=True)
def read_metafiles_once():
    """Each ``mmpretrain::`` base makes MMEngine parse all of MMPretrain's
    metafiles (~90 YAML files) again; reading each file once keeps parsing
    the configs fast. The files are only read, never changed."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mmengine.config.utils, 'load',
                      functools.lru_cache(maxsize=None)(load))
        yield


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """One intra-op thread: on a machine whose cores are shared, these small
    models run several times faster than with OpenMP threads that wait for
    each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def config(name):
    return Config.fromfile(osp.join(PRETRAIN, name))


def pools_of(model):
    return {
        name: type(module)
        for name, module in model.named_modules() if isinstance(module, POOLS)
    }


def twins(softpool_cls, **kwargs):
    """A vanilla MMPretrain backbone and its SoftPool twin, same weights."""
    vanilla_kwargs = {
        k: v
        for k, v in kwargs.items()
        if k not in softpool_cls.pool_slots and k not in ('soft_pool_sites',
                                                          'site_pool_cfg')
    }
    torch.manual_seed(0)
    vanilla = VANILLA[softpool_cls](**vanilla_kwargs)
    softpool = softpool_cls(**kwargs)
    softpool.load_state_dict(vanilla.state_dict(), strict=True)
    # (MMPretrain's ResNet.train() returns None: no chained .eval())
    vanilla.eval()
    softpool.eval()
    return vanilla, softpool


# ----------------------------------------------------------------- configs
@pytest.mark.parametrize('name', IMAGENET_CONFIGS + DEMO_CONFIGS)
def test_config_parses_and_builds(name):
    cfg = config(name)
    model = MODELS.build(cfg.model)
    backbone = model.backbone
    assert cfg.default_scope == 'mmpretrain'
    assert 'mmsoftpool' in cfg.custom_imports.imports
    if 'maxpool' in name or name.endswith('-N_8xb32_in1k.py'):
        assert SoftPool2d not in pools_of(backbone).values()
    else:
        assert SoftPool2d in pools_of(backbone).values()
    # SoftPool keeps the keys: every swapped layer holds no state, as the
    # pooling layer it replaced.
    for module in backbone.modules():
        if isinstance(module, SoftPool2d):
            assert not module.state_dict()
    if name == 'demo/resnet18_maxpool_demo.py':
        assert type(backbone) is ResNet  # MMPretrain's own
    else:
        assert type(backbone) in VANILLA  # one of the SoftPool classes


@pytest.mark.parametrize('name', IMAGENET_CONFIGS)
def test_imagenet_configs_follow_the_paper_recipe(name):
    cfg = config(name)
    assert cfg.optim_wrapper.optimizer.type == 'SGD'
    assert cfg.optim_wrapper.optimizer.lr == 0.1
    # 8 GPUs x 32 images = 256, the batch the lr is set for
    assert cfg.train_dataloader.batch_size * 8 == 256
    assert cfg.auto_scale_lr.base_batch_size == 256
    assert cfg.param_scheduler.type == 'MultiStepLR'
    assert cfg.param_scheduler.milestones == [40, 80]
    assert cfg.param_scheduler.gamma == 0.1
    assert cfg.train_cfg.max_epochs == 100
    crop = cfg.train_dataloader.dataset.pipeline[1]
    assert crop.type == 'RandomResizedCrop'
    assert crop.scale == (299 if name.startswith('inception') else 224)
    assert cfg.train_dataloader.dataset.type == 'ImageNet'
    assert cfg.val_dataloader.dataset.split == 'val'
    assert tuple(cfg.val_evaluator.topk) == (1, 5)


def test_paper_table2_models_have_configs():
    expected = [
        'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152',
        'densenet121', 'densenet161', 'densenet169', 'resnext50-32x4d',
        'resnext101-32x8d', 'wide-resnet50'
    ]
    for model in expected:
        assert f'{model}-softpool_8xb32_in1k.py' in IMAGENET_CONFIGS
    cfg = config('wide-resnet50-softpool_8xb32_in1k.py').model.backbone
    assert (cfg.type, cfg.depth, cfg.base_channels,
            cfg.expansion) == ('SoftPoolResNet', 50, 128, 2)
    cfg = config('resnext101-32x8d-softpool_8xb32_in1k.py').model.backbone
    assert (cfg.type, cfg.depth, cfg.groups,
            cfg.width_per_group) == ('SoftPoolResNeXt', 101, 32, 8)


def test_metafile_lists_every_imagenet_config():
    metafile = load(osp.join(PRETRAIN, 'metafile.yml'))
    listed = [model['Config'] for model in metafile['Models']]
    assert sorted(listed) == [
        f'configs/pretrain/{c}' for c in IMAGENET_CONFIGS
    ]


def test_inception_configs_are_table6_columns():
    chosen = [
        config(f'inception-v3-softpool-{column}_8xb32_in1k.py').model.backbone.
        soft_pool_sites for column in TABLE6_COLUMNS
    ]
    # column k replaces the first k sites, from the input on
    assert chosen == [SITES[:k] for k in range(len(SITES) + 1)]


def test_demo_detector_starts_from_the_demo_classifier():
    """Step 2 of the demo names the checkpoint step 1 writes."""
    classifier = config('demo/resnet18_softpool_demo.py')
    detector = config('demo/retinanet_r18_softpool_pretrained_demo.py')
    assert detector.default_scope == 'mmdet'
    backbone = detector.model.backbone
    assert (backbone.type, backbone.depth) == ('SoftPoolResNet', 18)
    # the same stem: both leave it to the one default (models/pool_slots.py)
    assert backbone.get('stem_pool_cfg') == classifier.model.backbone.get('stem_pool_cfg')
    # the newest checkpoint of step 1's work dir, whatever its epoch count
    assert backbone.init_cfg == dict(
        type='Pretrained',
        checkpoint='work_dir://work_dirs/pretrain_demo/resnet18_softpool',
        prefix='backbone.')
    assert classifier.train_cfg.max_epochs > 0


# ---------------------------------------------------------------- backbones
@pytest.mark.parametrize(
    'softpool_cls,kwargs,size',
    [(SoftPoolResNet, dict(depth=18), 32),
     (SoftPoolResNeXt, dict(depth=50, groups=32, width_per_group=4), 32),
     (SoftPoolDenseNet, dict(arch='121'), 32),
     (SoftPoolInceptionV3, dict(num_classes=10, dropout=0), 75)],
    ids=['ResNet-18', 'ResNeXt-50', 'DenseNet-121', 'InceptionV3'])
def test_key_parity_forward_and_backward(softpool_cls, kwargs, size):
    vanilla, softpool = twins(softpool_cls, **kwargs)
    assert list(softpool.state_dict()) == list(vanilla.state_dict())
    # Batch statistics (train mode) keep the activations of these untrained
    # networks alive; the same weights then give other outputs: the swapped
    # layers are what runs.
    vanilla.train()
    softpool.train()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        vanilla_out = [o for o in vanilla(x) if o is not None][-1]
    out = [o for o in softpool(x) if o is not None][-1]
    assert out.shape == vanilla_out.shape
    assert not torch.allclose(out, vanilla_out)

    out.square().mean().backward()
    grads = [p.grad for p in softpool.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    first_conv = next(m for m in softpool.modules()
                      if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad.abs().sum() > 0


def test_resnet_swaps_only_the_stem():
    vanilla, softpool = twins(SoftPoolResNet, depth=50)
    pools = pools_of(softpool)
    assert pools.pop('maxpool') is SoftPool2d
    assert (softpool.maxpool.kernel_size, softpool.maxpool.stride,
            softpool.maxpool.padding) == ((2, 2), (2, 2), (0, 0))
    assert pools == {
        n: t
        for n, t in pools_of(vanilla).items() if n != 'maxpool'
    }
    kept = SoftPoolResNet(depth=18, stem_pool_cfg=None)
    assert isinstance(kept.maxpool, nn.MaxPool2d)


def test_densenet_swaps_stem_and_transition_pools():
    model = SoftPoolDenseNet(arch='121')
    assert pools_of(model) == {
        'stem.3': SoftPool2d,
        'transitions.0.pool': SoftPool2d,
        'transitions.1.pool': SoftPool2d,
        'transitions.2.pool': SoftPool2d,
    }
    stem = model.stem[3]
    assert (stem.kernel_size, stem.stride) == ((2, 2), (2, 2))
    for index in range(3):
        pool = model.transitions[index].pool
        assert (pool.kernel_size, pool.stride,
                pool.padding) == ((2, 2), (2, 2), (0, 0))
    only_stem = SoftPoolDenseNet(arch='121', transition_pool_cfg=None)
    assert set(pools_of(only_stem).values()) == {SoftPool2d, nn.AvgPool2d}
    assert pools_of(only_stem)['stem.3'] is SoftPool2d


# The layers each site of Table 6 covers in MMPretrain's InceptionV3; the
# same mapping is documented in docs/classification.md.
INCEPTION_SITE_LAYERS = {
    'pool_1': ['maxpool1'],
    'pool_2': ['maxpool2'],
    'mixed_5b-d': [f'Mixed_5{b}.branch_pool_downsample' for b in 'bcd'],
    'mixed_6a': ['Mixed_6a.branch_pool'],
    'mixed_6b-e': [f'Mixed_6{b}.branch_pool_downsample' for b in 'bcde'],
    'mixed_7a': ['Mixed_7a.branch_pool'],
    'mixed_7b-d': [f'Mixed_7{b}.branch_pool_downsample' for b in 'bc'],
}


@pytest.mark.parametrize('site', SITES)
def test_inception_site_covers_its_layers(site):
    vanilla = InceptionV3(num_classes=10, aux_logits=True)
    model = SoftPoolInceptionV3(
        num_classes=10, aux_logits=True, soft_pool_sites=[site])
    swapped = sorted(n for n, t in pools_of(model).items() if t is SoftPool2d)
    assert swapped == sorted(INCEPTION_SITE_LAYERS[site])
    for name in swapped:
        old, new = vanilla.get_submodule(name), model.get_submodule(name)
        # each SoftPool keeps the geometry of the pool it replaces
        assert new.kernel_size == (old.kernel_size, ) * 2
        assert new.stride == (old.stride, ) * 2
        assert new.padding == (old.padding, ) * 2
    # the auxiliary head's pool and the global pool are no sites
    assert isinstance(model.AuxLogits.downsample, nn.AvgPool2d)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)


def test_inception_all_sites_cover_every_pool():
    model = SoftPoolInceptionV3(num_classes=10)
    swapped = sorted(n for n, t in pools_of(model).items() if t is SoftPool2d)
    assert swapped == sorted(sum(INCEPTION_SITE_LAYERS.values(), []))
    assert len(swapped) == 13
    assert not any(
        t in (nn.MaxPool2d, nn.AvgPool2d) for t in pools_of(model).values())
    original = SoftPoolInceptionV3(num_classes=10, soft_pool_sites=[])
    assert SoftPool2d not in pools_of(original).values()


def test_inception_bad_sites():
    with pytest.raises(ValueError, match=r"unknown sites \['mixed_7d'\]"):
        SoftPoolInceptionV3(soft_pool_sites=['pool_1', 'mixed_7d'])
    with pytest.raises(TypeError, match='must be a list of site names'):
        SoftPoolInceptionV3(soft_pool_sites='pool_1')
    with pytest.raises(ValueError, match=r"repeats \['pool_2'\]"):
        SoftPoolInceptionV3(soft_pool_sites=['pool_2', 'pool_2'])
    with pytest.raises(ValueError, match='site_pool_cfg=None'):
        SoftPoolInceptionV3(site_pool_cfg=None)
    with pytest.raises(TypeError, match='choose sites with soft_pool_sites'):
        SoftPoolInceptionV3(**{'pool_1': dict(type='SoftPool2d')})


def test_bad_pool_cfg_names_the_argument():
    with pytest.raises(ValueError, match='transition_pool_cfg.*NoSuchPool'):
        SoftPoolDenseNet(
            arch='121', transition_pool_cfg=dict(type='NoSuchPool'))
    with pytest.raises(ValueError, match='down_pool_cfg.*avg_down=True'):
        SoftPoolResNet(depth=18, down_pool_cfg=dict(type='SoftPool2d'))


def test_import_without_mmpretrain():
    """``import mmsoftpool`` works where MMPretrain is not installed."""
    code = ('import sys; sys.modules["mmpretrain"] = None\n'
            'import mmsoftpool\n'
            'from mmsoftpool.models import classification\n'
            'assert classification.__all__ == [], classification.__all__\n'
            'from mmengine.registry import MODELS\n'
            'assert MODELS.get("SoftPool2d") is not None\n')
    run_python(code, cwd=REPO_ROOT)


# ------------------------------------------------------------------ dataset
SMALL = dict(num_train_per_class=4, num_val_per_class=2, image_size=32, seed=0)


def test_dataset_generation(tmp_path):
    root = str(tmp_path / 'shapes')
    ensure_classification_demo(root, **SMALL)
    train = DemoShapesDataset(root=root, split='train', **SMALL)
    val = DemoShapesDataset(root=root, split='val', **SMALL)
    assert train.CLASSES == ('circle', 'square', 'triangle')
    assert len(train) == 12 and len(val) == 6
    assert sorted(
        train.get_gt_labels().tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    # deterministic: the same arguments give the same files
    generate_classification_demo(str(tmp_path / 'again'), **SMALL)
    for split, index in (('train', 0), ('val', 5)):
        path = (train
                if split == 'train' else val).get_data_info(index)['img_path']
        twin = path.replace(root, str(tmp_path / 'again'))
        with open(path, 'rb') as a, open(twin, 'rb') as b:
            assert a.read() == b.read()
    # an existing dataset made with other arguments is an error
    with pytest.raises(ValueError, match='was generated with'):
        ensure_classification_demo(root, **dict(SMALL, seed=1))
    with pytest.raises(ValueError, match='was generated with'):
        DemoShapesDataset(root=root, split='train')  # generator defaults
    (tmp_path / 'other').mkdir()
    with pytest.raises(FileNotFoundError, match='not a generated'):
        ensure_classification_demo(str(tmp_path / 'other'), **SMALL)
    with pytest.raises(ValueError, match="split must be one of"):
        DemoShapesDataset(root=root, split='test', **SMALL)
    with pytest.raises(ValueError, match='image_size must be at least'):
        generate_classification_demo(str(tmp_path / 'tiny'), image_size=8)


def test_demo_module_without_mmpretrain():
    """Without MMPretrain the demo module has the detection dataset and both
    generators, but no DemoShapesDataset."""
    code = ('import sys; sys.modules["mmpretrain"] = None\n'
            'from mmsoftpool.datasets import demo\n'
            'assert not hasattr(demo, "DemoShapesDataset")\n'
            'from mmdet.registry import DATASETS\n'
            'assert DATASETS.get("DemoShapesCocoDataset") is '
            'demo.DemoShapesCocoDataset\n')
    run_python(code, cwd=REPO_ROOT)


# ------------------------------------------------- the embedded default run
def run_tool(script, args):
    """Run ``tools/<script>`` in this process, as from the command line."""
    path = osp.join(REPO_ROOT, 'tools', script)
    spec = importlib.util.spec_from_file_location(f'tool_{script[:-3]}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = sys.argv
    sys.argv = [path] + [str(a) for a in args]
    try:
        module.main()
    finally:
        sys.argv = argv


@pytest.fixture(scope='module')
def embedded_run(tmp_path_factory):
    """The demo config as shipped, trained through tools/train.py, on the
    generated dataset (made under a temporary root on first use)."""
    tmp = tmp_path_factory.mktemp('embedded')
    data_root = tmp / 'demo_cls'
    roots = [
        f'{loader}.dataset.root={data_root}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ]
    work_dir = tmp / 'work_dir'
    config_file = osp.join(PRETRAIN, 'demo', 'resnet18_softpool_demo.py')
    run_tool('train.py',
             [config_file, '--work-dir', work_dir, '--cfg-options', *roots])
    max_epochs = Config.fromfile(config_file).train_cfg.max_epochs
    checkpoint = work_dir / f'epoch_{max_epochs}.pth'
    assert checkpoint.is_file()
    scalars = glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))
    with open(scalars[0]) as f:
        logged = [json.loads(line) for line in f]
    top1 = [
        entry['accuracy/top1'] for entry in logged if 'accuracy/top1' in entry
    ]
    return dict(checkpoint=checkpoint, roots=roots, tmp=tmp, top1=top1)


@pytest.mark.slow
def test_embedded_run_beats_chance(embedded_run):
    """The final val top-1 is far above chance (1/3): a binomial test over
    the 90 val images rejects guessing at p < 1e-4."""
    top1 = embedded_run['top1'][-1]
    correct = round(top1 / 100 * 90)
    assert binomtest(correct, 90, 1 / 3, alternative='greater').pvalue < 1e-4


@pytest.mark.slow
def test_checkpoint_initialises_softpool_retinanet(embedded_run):
    """The hand-off: the classification checkpoint initialises the backbone
    of a SoftPool RetinaNet through init_cfg, with no missing or unexpected
    keys."""
    checkpoint = str(embedded_run['checkpoint'])
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs', 'retinanet',
                 'retinanet_r18_softpool.py'))
    cfg.model.backbone.init_cfg = dict(
        type='Pretrained', checkpoint=checkpoint, prefix='backbone.')
    detector = DET_MODELS.build(cfg.model)
    assert isinstance(detector.backbone.maxpool, SoftPool2d)
    pretrained = _load_checkpoint_with_prefix('backbone.', checkpoint)
    assert set(pretrained) == set(detector.backbone.state_dict())
    detector.init_weights()
    for key, value in detector.backbone.state_dict().items():
        torch.testing.assert_close(value, pretrained[key], rtol=0, atol=0)


@pytest.mark.slow
def test_pooling_swap_by_config_override_and_mcnemar(embedded_run):
    """The paper's "pre-trained" column: an existing checkpoint evaluated by
    tools/test.py with its pooling swapped by --cfg-options, no training;
    then McNemar's test between the two prediction files."""
    tmp, checkpoint = embedded_run['tmp'], embedded_run['checkpoint']
    max_config = osp.join(PRETRAIN, 'demo', 'resnet18_maxpool_demo.py')
    files = {}
    for pool, override in (('max', []),
                           ('soft', ['model.backbone.type=SoftPoolResNet'])):
        files[pool] = tmp / f'{pool}.pkl'
        run_tool('test.py', [
            max_config, checkpoint, '--work-dir', tmp / f'test_{pool}',
            '--out', files[pool], '--cfg-options', *embedded_run['roots'],
            *override
        ])
    soft = load(files['soft'])
    correct = sum(int(r['pred_label'] == r['gt_label']) for r in soft)
    # Swapped back to SoftPool, the network is the one trained: the same
    # top-1 as logged by the training run's last validation.
    assert 100 * correct / len(soft) == pytest.approx(embedded_run['top1'][-1])

    spec = importlib.util.spec_from_file_location(
        'mcnemar', osp.join(REPO_ROOT, 'tools', 'analysis_tools',
                            'mcnemar.py'))
    mcnemar = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mcnemar)
    result = mcnemar.main([str(files['soft']), str(files['max'])])
    assert sum(map(sum, result['table'])) == 90
    assert result['accuracy'][0] == pytest.approx(correct / 90)
