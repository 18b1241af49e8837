"""tools/train.py, tools/test.py and the launch scripts, run as a user runs
them, on a tiny generated COCO-format dataset (real mmdet datasets, real
COCO AP from pycocotools), on CPU; distributed with 2 processes (gloo)."""
import json
import os
import pickle
import re
import runpy
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmsoftpool.datasets.demo import DEMO_CLASSES, generate_demo_dataset

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / 'tools'
TIMEOUT = 300

# The RetinaNet-R18 COCO configs, cut down to the tiny dataset: 64x64 images,
# 1 epoch of 2 iterations, validation after it, no pretrained download.
TINY_OVERRIDES = """\
data_root = {root!r}
metainfo = dict(classes={classes!r})
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))
]
train_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
# Untrained, the detector scores every box below mmdet's 0.05 threshold; with
# none left, CocoMetric would have nothing to score.
model = dict(backbone=dict(init_cfg=None), bbox_head=dict(num_classes=3),
             test_cfg=dict(score_thr=0.0))
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1))
"""


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    """A COCO-format dataset: 2 training and 2 validation images, 96x96
    (read at 64x64)."""
    root = tmp_path_factory.mktemp('data') / 'coco'
    generate_demo_dataset(str(root), num_train=2, num_val=2, image_size=96)
    return root


def tiny_config(path, base, coco_root):
    """Write a config inheriting ``base`` with the tiny data and schedule."""
    path.write_text(f'_base_ = {str(base)!r}\n' + TINY_OVERRIDES.format(
        root=f'{coco_root}/', classes=DEMO_CLASSES))
    return path


@pytest.fixture(scope='module')
def softpool_cfg(tmp_path_factory, coco_root):
    return tiny_config(
        tmp_path_factory.mktemp('configs') / 'retinanet_r18_softpool_tiny.py',
        REPO / 'configs/retinanet/retinanet_r18_softpool.py', coco_root)


def run(args, cwd, env=None, timeout=TIMEOUT):
    full_env = dict(os.environ, **(env or {}))
    full_env['PYTHON'] = sys.executable  # for the shell scripts
    result = subprocess.run(
        args,
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout)
    return result


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def bbox_map(text):
    """COCO bbox mAP values printed by mmdet's CocoMetric."""
    return [float(v) for v in re.findall(r'coco/bbox_mAP: (-?[\d.]+)', text)]


def test_pretrained_setting_and_test_dev_format(tmp_path, coco_root):
    """The paper's "pre-trained" setting: a checkpoint of the max-pool model,
    evaluated with the pooling swapped on the command line; and the format
    of a COCO test-dev submission (results JSON, no scoring)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    vanilla_cfg = tiny_config(tmp_path / 'retinanet_r18_tiny.py',
                              'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py',
                              coco_root)
    cfg = Config.fromfile(vanilla_cfg)
    init_default_scope('mmdet')
    torch.manual_seed(0)
    ckpt = tmp_path / 'maxpool.pth'
    torch.save({'state_dict': MODELS.build(cfg.model).state_dict()}, ckpt)

    prefix = tmp_path / 'results' / 'test-dev'
    result = run([
        sys.executable,
        str(TOOLS / 'test.py'),
        str(vanilla_cfg),
        str(ckpt), '--work-dir',
        str(tmp_path / 'work'), '--cfg-options',
        'model.backbone.type=SoftPoolResNet',
        'test_evaluator.format_only=True',
        f'test_evaluator.outfile_prefix={prefix}'
    ], tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "type='SoftPoolResNet'" in log
    assert 'do not match exactly' not in log  # every key loaded
    results = json.loads(Path(f'{prefix}.bbox.json').read_text())
    assert results, 'no detections written'
    assert set(results[0]) == {'image_id', 'bbox', 'score', 'category_id'}


# --- bad input fails early, saying what and where --------------------------


def run_tool_in_process(monkeypatch, tool, *args):
    monkeypatch.setattr(sys, 'argv', [str(TOOLS / tool), *map(str, args)])
    monkeypatch.setenv('LOCAL_RANK', '0')  # the tools set it if unset
    runpy.run_path(str(TOOLS / tool), run_name='__main__')


def user_error(capsys, monkeypatch, tool, *args):
    """A tool run that stops with a user error: exit code 2 and the message
    on stderr (no traceback)."""
    with pytest.raises(SystemExit) as stop:
        run_tool_in_process(monkeypatch, tool, *args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert err.startswith(f'{tool}: error: '), err
    return err


def test_unknown_pooling_type(monkeypatch, tmp_path, softpool_cfg):
    with pytest.raises(ValueError) as error:
        run_tool_in_process(monkeypatch, 'train.py', softpool_cfg,
                            '--work-dir', tmp_path, '--cfg-options',
                            'model.backbone.stem_pool_cfg.type=SoftPool')
    message = str(error.value)
    assert 'SoftPoolResNet: stem_pool_cfg=' in message
    assert "unknown pooling type 'SoftPool'" in message


def test_missing_data_root(capsys, monkeypatch, tmp_path, softpool_cfg):
    missing = tmp_path / 'no_such_coco'
    err = user_error(
        capsys, monkeypatch, 'train.py', softpool_cfg, '--work-dir', tmp_path,
        '--cfg-options', f'train_dataloader.dataset.data_root={missing}')
    assert str(missing) in err


def test_empty_annotation_file(capsys, monkeypatch, tmp_path, softpool_cfg):
    empty = tmp_path / 'instances_val.json'
    empty.write_text('')
    err = user_error(capsys, monkeypatch, 'test.py', softpool_cfg,
                     softpool_cfg, '--work-dir', tmp_path, '--cfg-options',
                     f'test_evaluator.ann_file={empty}')
    assert str(empty) in err and 'empty' in err


def test_test_tool_arguments(capsys, monkeypatch, tmp_path, softpool_cfg):
    assert 'no_such.pth' in user_error(capsys, monkeypatch, 'test.py',
                                       softpool_cfg, tmp_path / 'no_such.pth')
    assert '--out must name a .pkl' in user_error(
        capsys, monkeypatch, 'test.py', softpool_cfg, softpool_cfg, '--out',
        tmp_path / 'results.json')


@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_user_errors_are_one_line(capsys, monkeypatch, tmp_path, tool,
                                  softpool_cfg):
    """A missing config, a syntax error (named with its file and line, also
    in a base file) and --cfg-options without '=': one line, exit code 2."""
    bad = tmp_path / 'bad_base.py'
    bad.write_text('a = 1\nb = (\nc = 2\n')
    child = tmp_path / 'child.py'
    child.write_text("_base_ = './bad_base.py'\nx = 1\n")
    extra = [softpool_cfg] if tool == 'test.py' else []
    cases = {
        (str(tmp_path / 'absent.py'), ):
        f"config file '{tmp_path / 'absent.py'}' does not exist",
        (str(bad), ): f'syntax error in {bad}, line 2: ',
        (str(child), ): f'syntax error in {bad}, line 2: ',
        (softpool_cfg, '--cfg-options', 'train_cfg.max_epochs'):
        "--cfg-options: 'train_cfg.max_epochs' is not KEY=VALUE",
    }
    for args, message in cases.items():
        args = (args[0], *extra, *args[1:])
        err = user_error(capsys, monkeypatch, tool, *args)
        assert message in err, err
        assert err.count('\n') == 1, err


# --- train with torchrun on 2 CPU processes, then test ---------------------


@pytest.fixture(scope='module')
def trained(tmp_path_factory, softpool_cfg):
    """tools/dist_train.sh with 2 CPU processes (gloo): the log and the
    work directory."""
    work = tmp_path_factory.mktemp('dist_train')
    result = run([
        'bash',
        str(TOOLS / 'dist_train.sh'),
        str(softpool_cfg), '2', '--work-dir',
        str(work)
    ], work, dict(PORT=str(free_port()), CUDA_VISIBLE_DEVICES=''))
    return result, work


@pytest.mark.slow
def test_dist_train_two_cpu_processes(trained):
    result, work = trained
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert 'Distributed training: True' in log
    assert re.search(r'GPU number: 2\b', log)  # mmengine's word for world size
    assert "backend='gloo'" in log
    assert "type='SoftPoolResNet'" in log
    assert len(bbox_map(log)) == 1  # COCO AP after the epoch
    assert (work / 'epoch_1.pth').is_file()


def test_test_tool_out_and_show_dir(tmp_path, softpool_cfg, trained):
    """The checkpoint the Runner wrote, evaluated in one process."""
    ckpt = trained[1] / 'epoch_1.pth'
    out = tmp_path / 'predictions.pkl'
    result = run([
        sys.executable,
        str(TOOLS / 'test.py'),
        str(softpool_cfg),
        str(ckpt), '--work-dir',
        str(tmp_path / 'work'), '--out',
        str(out), '--show-dir', 'painted'
    ], tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert len(bbox_map(log)) == 1
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 2
    assert {'img_id', 'pred_instances'} <= set(predictions[0])
    painted = list((tmp_path / 'work').glob('*/painted/*.png'))
    assert len(painted) == 2


@pytest.mark.slow
def test_dist_test_two_cpu_processes(tmp_path, softpool_cfg, trained):
    result = run([
        'bash',
        str(TOOLS / 'dist_test.sh'),
        str(softpool_cfg),
        str(trained[1] / 'epoch_1.pth'), '2', '--work-dir',
        str(tmp_path / 'work')
    ], tmp_path, dict(PORT=str(free_port()), CUDA_VISIBLE_DEVICES=''))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert 'Distributed training: True' in log
    assert len(bbox_map(log)) == 1


def test_finish_distributed_destroys_the_group():
    """What train.py / test.py call after a run: the group is gone before
    the interpreter exits (left to exit, gloo can abort the process); without
    one, nothing happens."""
    import torch.distributed as dist

    from mmsoftpool.tools.launch import finish_distributed
    finish_distributed()
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{free_port()}', rank=0,
        world_size=1)
    finish_distributed()
    assert not dist.is_initialized()


def test_slurm_train_passes_its_arguments(tmp_path):
    """No cluster here: a stand-in ``srun`` records how it is called."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    record = tmp_path / 'srun_args.txt'
    (bin_dir / 'srun').write_text(
        f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {record}\n')
    (bin_dir / 'srun').chmod(0o755)
    env = dict(
        PATH=f'{bin_dir}:{os.environ["PATH"]}', GPUS='16', GPUS_PER_NODE='8')
    result = run([
        'bash',
        str(TOOLS / 'slurm_train.sh'), 'gpu_part', 'job1',
        'configs/retinanet/retinanet_r50_softpool.py', 'work_dirs/r50',
        '--cfg-options', 'train_cfg.max_epochs=1'
    ], REPO, env)
    assert result.returncode == 0, result.stderr
    args = record.read_text().splitlines()
    assert args[:2] == ['-p', 'gpu_part']
    for expected in ('--job-name=job1', '--gres=gpu:8', '--ntasks=16',
                     '--ntasks-per-node=8', '--kill-on-bad-exit=1'):
        assert expected in args
    train = args.index(sys.executable)
    assert args[train:] == [
        sys.executable, '-u',
        str(TOOLS / 'train.py'),
        'configs/retinanet/retinanet_r50_softpool.py',
        '--work-dir=work_dirs/r50', '--launcher=slurm', '--cfg-options',
        'train_cfg.max_epochs=1'
    ]
