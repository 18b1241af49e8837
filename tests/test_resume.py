"""Exact resume through the project's tools: RetinaNet (SoftPool demo config)
on a small generated COCO dataset, 3 epochs in one go versus 2 epochs, then
``tools/train.py --resume`` for the third. Same final weights, same loss at
every iteration of the third epoch, same predictions and COCO metrics from
``tools/test.py``.

The interrupted run stops after epoch 2 the way a crash after a checkpoint
does: its config is the same except ``train_cfg.max_epochs=2`` (nothing else
depends on it: the LR schedule's milestones are fixed numbers), and it
validates after epoch 2 where the uninterrupted run does not, which the
RNGStateHook keeps out of the training's random streams.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmsoftpool.datasets.demo import generate_demo_dataset

pytestmark = pytest.mark.slow  # trains the demo detector

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
BASE_CONFIG = osp.join(REPO, 'configs/demo/retinanet_r18_softpool_demo.py')

CONFIG = """
_base_ = {base!r}
data_root = {root!r}
# 96x96 images resized to 64x64, 2 iterations of 2 images an epoch: seconds
# per run on CPU
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),  # draws from numpy's global RNG
    dict(type='PackDetInputs')
]
# the generator's arguments of the data made by make_data: checked on use
demo = dict(num_train=4, num_val=2, image_size=96)
train_dataloader = dict(
    batch_size=2, dataset=dict(data_root=data_root, pipeline=pipeline, **demo))
val_dataloader = dict(
    batch_size=2,
    dataset=dict(data_root=data_root, **demo, pipeline=pipeline[:3] + [
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                        'scale_factor'))
    ]))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
# Barely trained: keep every box so that COCO metrics are computed
model = dict(test_cfg=dict(score_thr=0.0))
train_cfg = dict(max_epochs=3, val_interval=10)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3),
    dict(type='MultiStepLR', begin=0, end=3, by_epoch=True, milestones=[2])
]
default_hooks = dict(
    checkpoint=dict(interval=1, max_keep_ckpts=3), logger=dict(interval=1))
custom_imports = dict(
    imports=['mmsoftpool.models', 'mmsoftpool.engine'],
    allow_failed_imports=False)
custom_hooks = [dict(type='RNGStateHook'), dict(type='CheckpointMatchHook')]
randomness = dict(seed=0)
"""


def run_tool(*args):
    # One thread: the same arithmetic in every run, and no oversubscription
    # of a CPU shared with other jobs (which slows training tenfold).
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    out = subprocess.run([sys.executable, *args],
                         cwd=REPO,
                         env=env,
                         capture_output=True,
                         text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def train(config, work_dir, *options):
    return run_tool('tools/train.py', config, '--work-dir', str(work_dir),
                    *options)


def logged(work_dir, key):
    """``{step: value}`` of a scalar logged in work_dir/<time>/vis_data."""
    values = {}
    for path in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if key in record:
                values[record['step']] = record[key]
    return values


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp('data') / 'demo'
    generate_demo_dataset(str(root), num_train=4, num_val=2, image_size=96)
    path = tmp_path_factory.mktemp('configs') / 'retinanet_resume.py'
    path.write_text(CONFIG.format(base=BASE_CONFIG, root=str(root) + '/'))
    return str(path)


@pytest.fixture(scope='module')
def whole(config, tmp_path_factory):
    """The work dir of the uninterrupted 3-epoch run."""
    work_dir = tmp_path_factory.mktemp('whole')
    train(config, work_dir)
    return work_dir


COCO_KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75')


def test_resume_at_epoch_boundary_is_exact(config, whole, tmp_path):
    split = tmp_path / 'split'
    train(config, split, '--cfg-options', 'train_cfg.max_epochs=2')
    assert not (split / 'epoch_3.pth').exists()
    log = train(config, split, '--resume')
    assert 'resumed epoch: 2, iter: 4' in log
    assert 'RNGStateHook: random states restored' in log

    final_whole = torch.load(whole / 'epoch_3.pth')
    final_split = torch.load(split / 'epoch_3.pth')
    assert final_whole['meta']['iter'] == final_split['meta']['iter'] == 6
    weights = final_whole['state_dict']
    assert weights.keys() == final_split['state_dict'].keys()
    for key, value in weights.items():
        assert torch.equal(value, final_split['state_dict'][key]), key
    # the optimizer state (momentum) continues too
    state_whole = final_whole['optimizer']['state']
    for index, state in final_split['optimizer']['state'].items():
        assert torch.equal(state['momentum_buffer'],
                           state_whole[index]['momentum_buffer'])

    loss_whole, loss_split = logged(whole, 'loss'), logged(split, 'loss')
    assert sorted(loss_whole) == sorted(loss_split) == [1, 2, 3, 4, 5, 6]
    assert loss_whole == loss_split

    # COCO metrics: the final validations, and tools/test.py
    metrics_whole = {key: logged(whole, key)[3] for key in COCO_KEYS}
    metrics_split = {key: logged(split, key)[3] for key in COCO_KEYS}
    assert metrics_whole == metrics_split
    log = run_tool('tools/test.py', config, str(split / 'epoch_3.pth'),
                   '--work-dir', str(tmp_path / 'test'))
    metrics_test = {
        key: float(value)
        for key, value in re.findall(r'(coco/bbox_mAP(?:_50|_75)?): ([\d.]+)',
                                     log)
    }
    assert metrics_test == metrics_whole


def runner_for(config, work_dir, **options):
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options)
    cfg.work_dir = str(work_dir)
    return Runner.from_cfg(cfg)


def test_finetune_with_another_class_count(config, whole, tmp_path, capfd):
    """As in mmdet: the head mismatch is reported, the rest is loaded."""
    checkpoint = str(whole / 'epoch_3.pth')
    runner = runner_for(
        config, tmp_path, load_from=checkpoint,
        **{'model.bbox_head.num_classes': 5})
    runner.load_or_resume()
    trained = torch.load(checkpoint)['state_dict']
    loaded = runner.model.state_dict()
    for key in ('backbone.conv1.weight', 'backbone.layer4.1.bn2.running_var',
                'neck.fpn_convs.0.conv.weight',
                'bbox_head.reg_convs.0.conv.weight'):
        assert torch.equal(loaded[key], trained[key]), key
    assert loaded['bbox_head.retina_cls.weight'].shape[0] == 9 * 5
    assert ('size mismatch for bbox_head.retina_cls.weight'
            in capfd.readouterr().out)


def test_resume_with_another_architecture_is_refused(config, whole, tmp_path):
    """A Mask R-CNN resumed from the RetinaNet checkpoint: the keys are
    listed before anything is loaded."""
    checkpoint = str(whole / 'epoch_3.pth')
    mask_rcnn = osp.join(REPO, 'configs/demo/mask-rcnn_r18_softpool_demo.py')
    runner = runner_for(
        mask_rcnn, tmp_path, load_from=checkpoint, resume=True,
        custom_imports=Config.fromfile(config).custom_imports,
        custom_hooks=[dict(type='CheckpointMatchHook')])
    with pytest.raises(RuntimeError) as error:
        runner.load_or_resume()
    message = str(error.value)
    assert message.startswith(f"Checkpoint '{checkpoint}' does not fit the "
                              'model MaskRCNN (resuming needs every key')
    assert re.search(r'missing keys \(\d+\): .*rpn_head\.rpn_conv', message)
    assert re.search(r'unexpected keys \(\d+\): .*bbox_head\.cls_convs',
                     message)


def test_truncated_checkpoint_for_test(config, whole, tmp_path):
    data = (whole / 'epoch_3.pth').read_bytes()
    truncated = tmp_path / 'epoch_3.pth'
    truncated.write_bytes(data[:len(data) * 3 // 4])
    runner = runner_for(config, tmp_path / 'work', load_from=str(truncated))
    with pytest.raises(RuntimeError, match=f"Cannot read checkpoint "
                       f"'{truncated}' .*damaged, truncated"):
        runner.load_or_resume()


def test_backbone_init_from_checkpoint(config, whole):
    """``init_cfg=dict(type='Pretrained', prefix='backbone.')``, the way a
    classification checkpoint initialises a detector's backbone."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    checkpoint = str(whole / 'epoch_3.pth')
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = dict(
        type='Pretrained', checkpoint=checkpoint, prefix='backbone.')
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    model.init_weights()
    trained = torch.load(checkpoint)['state_dict']
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, trained[f'backbone.{key}']), key


def test_resume_skips_a_truncated_newest_checkpoint(config, whole, tmp_path):
    """The newest checkpoint cut short (disk full, an interrupted copy):
    ``--resume`` names it in one warning and resumes from the previous one,
    still exactly."""
    work = tmp_path / 'work'
    work.mkdir()
    for epoch in (1, 2):
        (work / f'epoch_{epoch}.pth').write_bytes(
            (whole / f'epoch_{epoch}.pth').read_bytes())
    data = (whole / 'epoch_3.pth').read_bytes()
    (work / 'epoch_3.pth').write_bytes(data[:len(data) // 3])
    (work / 'last_checkpoint').write_text(str(work / 'epoch_3.pth'))
    log = train(config, work, '--resume')
    warnings = [line for line in log.splitlines() if 'skipping damaged' in line]
    assert len(warnings) == 1, log[-3000:]
    assert f"--resume: skipping damaged checkpoint '{work / 'epoch_3.pth'}'" \
        in warnings[0]
    assert 'not a whole zip archive' in warnings[0]
    assert 'resumed epoch: 2, iter: 4' in log
    final_whole = torch.load(whole / 'epoch_3.pth')['state_dict']
    final = torch.load(work / 'epoch_3.pth')['state_dict']
    for key, value in final_whole.items():
        assert torch.equal(final[key], value), key


def test_test_refuses_a_checkpoint_that_leaves_parameters_unset(
        config, whole, tmp_path):
    """A checkpoint without the head's weights (another model's, an
    incomplete export): tools/test.py lists what stays unset and stops,
    unless --allow-partial."""
    checkpoint = torch.load(whole / 'epoch_3.pth')
    checkpoint['state_dict'] = {
        key: value for key, value in checkpoint['state_dict'].items()
        if not key.startswith('bbox_head.retina_cls')}
    partial = tmp_path / 'partial.pth'
    torch.save(checkpoint, partial)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    refused = subprocess.run(
        [sys.executable, 'tools/test.py', config, str(partial), '--work-dir',
         str(tmp_path / 'refused')], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert 'Traceback' not in refused.stderr
    assert (f"test.py: error: Checkpoint '{partial}' does not fit the model "
            'RetinaNet (every parameter of the model must come from the '
            'checkpoint') in refused.stderr
    assert re.search(r'missing keys \(2\): bbox_head\.retina_cls\.weight, '
                     r'bbox_head\.retina_cls\.bias', refused.stderr)
    log = run_tool('tools/test.py', config, str(partial), '--work-dir',
                   str(tmp_path / 'allowed'), '--allow-partial')
    assert 'coco/bbox_mAP' in log


def test_inference_paints_a_folder(config, whole, tmp_path):
    """tools/inference.py (mmdet's DetInferencer) on the val images with the
    trained checkpoint: a painted image and a prediction file for each."""
    images = osp.join(Config.fromfile(config).data_root, 'val')
    out = tmp_path / 'out'
    log = run_tool('tools/inference.py', images, config,
                   str(whole / 'epoch_3.pth'), '--out-dir', str(out),
                   '--score-thr', '0.0')
    names = sorted(os.listdir(images))
    assert f'{len(names)} images, {len(names)} with a box above 0.0' in log
    assert sorted(os.listdir(out / 'vis')) == names
    assert sorted(os.listdir(out / 'preds')) == [
        osp.splitext(name)[0] + '.json' for name in names]


def run_tool_expecting_user_error(*args):
    """A tool run that must end with exit 2 and one line, no traceback."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    out = subprocess.run([sys.executable, *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    assert 'Traceback' not in out.stderr, out.stderr[-3000:]
    return out.stderr.strip().splitlines()[-1]


def test_resume_falls_back_from_a_directory_flagged_newest_checkpoint(
        config, whole, tmp_path):
    """One bit of the newest checkpoint's zip directory flips (a storage
    record marked as a folder, which torch's reader skips, leaving the tensor
    uninitialised): --resume names it and resumes from the one before."""
    import hostile_files
    work = tmp_path / 'work'
    work.mkdir()
    for epoch in (1, 2):
        (work / f'epoch_{epoch}.pth').write_bytes(
            (whole / f'epoch_{epoch}.pth').read_bytes())
    (work / 'epoch_3.pth').write_bytes(hostile_files.with_directory_flag(
        (whole / 'epoch_3.pth').read_bytes(), '/data/0'))
    (work / 'last_checkpoint').write_text(str(work / 'epoch_3.pth'))
    log = train(config, work, '--resume')
    assert f"--resume: skipping damaged checkpoint '{work / 'epoch_3.pth'}'" \
        in log
    assert 'resumed epoch: 2, iter: 4' in log
    final_whole = torch.load(whole / 'epoch_3.pth')['state_dict']
    final = torch.load(work / 'epoch_3.pth')['state_dict']
    for key, value in final_whole.items():
        assert torch.equal(final[key], value), key


def test_resume_and_test_refuse_a_forged_checkpoint_in_one_line(
        config, whole, tmp_path):
    """A forged file (a numpy array BUILT twice: the use-after-free) named by
    last_checkpoint, or given to tools/test.py: exit 2, one line, nothing of
    it used."""
    import hostile_files
    forged = hostile_files.rebuilt_memo_files()['array-built-twice']
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'epoch_1.pth').write_bytes((whole / 'epoch_1.pth').read_bytes())
    (work / 'epoch_2.pth').write_bytes(forged)
    (work / 'last_checkpoint').write_text(str(work / 'epoch_2.pth'))
    line = run_tool_expecting_user_error('tools/train.py', config,
                                         '--work-dir', str(work), '--resume')
    assert line.startswith('train.py: error: Refused to load checkpoint '), line
    assert 'a second state for the same numpy array' in line
    line = run_tool_expecting_user_error('tools/test.py', config,
                                         str(work / 'epoch_2.pth'),
                                         '--work-dir', str(tmp_path / 'test'))
    assert line.startswith('test.py: error: Refused to load checkpoint '), line
