"""The generated action clips (mmsoftpool/datasets/action_demo.py), their
MMAction2 dataset, and a shortened run of ``tools/demo_video.py``."""
import json
import os.path as osp

import cv2
import numpy as np
import pytest

from helpers import run_python
from mmsoftpool.datasets import ACTION_CLASSES, ensure_action_demo, generate_action_demo
from test_demo import tree_digest

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SMALL = dict(num_train_per_class=2, num_val_per_class=1, num_frames=8,
             frame_size=32, seed=0)


def read_list(path):
    with open(path) as f:
        return [line.split() for line in f]


def test_generator_is_deterministic(tmp_path):
    generate_action_demo(str(tmp_path / 'a'), **SMALL)
    generate_action_demo(str(tmp_path / 'b'), **SMALL)
    first, second = tree_digest(tmp_path / 'a'), tree_digest(tmp_path / 'b')
    clips = (SMALL['num_train_per_class'] + SMALL['num_val_per_class']) * 4
    assert len(first) == clips * SMALL['num_frames'] + 3  # lists, meta.json
    assert first == second

    generate_action_demo(str(tmp_path / 'c'), **dict(SMALL, seed=1))
    other = tree_digest(tmp_path / 'c')
    assert other.keys() == first.keys()
    assert all(other[k] != first[k] for k in first if k.endswith('.png'))


def test_lists_frames_and_labels(tmp_path):
    root = tmp_path / 'clips'
    lists = ensure_action_demo(str(root), **SMALL)
    for split, per_class in (('train', 2), ('val', 1)):
        rows = read_list(lists[split])
        assert len(rows) == 4 * per_class
        for clip_dir, frames, label in rows:
            assert clip_dir.startswith(f'{split}/{ACTION_CLASSES[int(label)]}_')
            assert int(frames) == SMALL['num_frames']
            for t in range(1, int(frames) + 1):
                image = cv2.imread(str(root / clip_dir / f'img_{t:05}.png'))
                assert image.shape == (32, 32, 3)
        assert sorted({int(r[2]) for r in rows}) == [0, 1, 2, 3]
    with open(root / 'meta.json') as f:
        assert json.load(f)['generator']['classes'] == list(ACTION_CLASSES)


def shape_track(clip_dir, num_frames):
    """Centre x and area of the bright shape in each frame (the background
    is dark noise, the shape a saturated, bright colour)."""
    xs, areas = [], []
    for t in range(1, num_frames + 1):
        image = cv2.imread(osp.join(clip_dir, f'img_{t:05}.png'))
        mask = image.max(axis=2) >= 150
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN,
                                np.ones((2, 2), np.uint8)).astype(bool)
        xs.append(np.nonzero(mask)[1].mean())
        areas.append(mask.sum())
    return np.array(xs), np.array(areas)


def test_the_pixels_show_the_action(tmp_path):
    """Moving shapes travel the way their label says, growing ones grow,
    the others keep their size and place."""
    root = tmp_path / 'clips'
    generate_action_demo(str(root), **dict(SMALL, num_frames=16,
                                           num_train_per_class=4))
    for clip_dir, frames, label in read_list(root / 'train_list.txt'):
        x, area = shape_track(str(root / clip_dir), int(frames))
        action = ACTION_CLASSES[int(label)]
        travel = x[-2:].mean() - x[:2].mean()
        growth = area[-2:].mean() / area[:2].mean()
        if action == 'moving_left':
            assert travel < -5, (clip_dir, travel)
        elif action == 'moving_right':
            assert travel > 5, (clip_dir, travel)
        else:
            assert abs(travel) < 2.5, (clip_dir, travel)
        if action == 'growing':
            assert growth > 2.5, (clip_dir, growth)
        else:
            assert 0.7 < growth < 1.4, (clip_dir, growth)


@pytest.mark.parametrize('args,error', [
    (dict(num_frames=4), 'num_frames must be at least 8'),
    (dict(frame_size=16), 'frame_size must be at least 32'),
    (dict(num_train_per_class=0), 'num_train_per_class must be a positive'),
])
def test_generator_arguments_are_checked(tmp_path, args, error):
    with pytest.raises(ValueError, match=error):
        generate_action_demo(str(tmp_path / 'x'), **dict(SMALL, **args))
    assert not (tmp_path / 'x').exists()


def test_dataset_generates_once_and_checks_after(tmp_path):
    pytest.importorskip('mmaction')
    from mmaction.utils import register_all_modules
    from mmengine.registry import DefaultScope

    from mmsoftpool.datasets.action_demo import DemoActionsDataset
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmaction'):
        check_dataset(str(tmp_path / 'clips'), DemoActionsDataset)


def check_dataset(root, DemoActionsDataset):
    pipeline = [dict(type='SampleFrames', clip_len=4, frame_interval=2,
                     num_clips=1, test_mode=True),
                dict(type='RawFrameDecode'),
                dict(type='FormatShape', input_format='NCTHW'),
                dict(type='PackActionInputs')]
    train = DemoActionsDataset(root, 'train', pipeline=pipeline, **SMALL)
    assert len(train) == 8
    sample = train[0]
    assert tuple(sample['inputs'].shape) == (1, 3, 4, 32, 32)
    assert int(sample['data_samples'].gt_label) == 0  # moving_left first
    val = DemoActionsDataset(root, 'val', pipeline=pipeline, test_mode=True,
                             **SMALL)
    assert len(val) == 4
    with pytest.raises(ValueError, match='was generated with'):
        DemoActionsDataset(root, 'val', pipeline=pipeline,
                           **dict(SMALL, seed=3))
    with pytest.raises(ValueError, match="split must be one of"):
        DemoActionsDataset(root, 'test', pipeline=pipeline, **SMALL)
    with pytest.raises(TypeError, match='ann_file'):
        DemoActionsDataset(root, 'val', pipeline=pipeline, ann_file='x.txt')


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    """tools/demo_video.py on a tiny clip set, one epoch: it prints the
    accuracy and writes metrics.json and confusion_matrix.png."""
    pytest.importorskip('mmaction')
    result = run_python(f'''
        import sys
        sys.argv = ['demo_video.py', '--pool', 'softpool',
                    '--data-root', {str(tmp_path / 'clips')!r},
                    '--work-dir', {str(tmp_path / 'work')!r},
                    '--num-train-per-class', '2', '--num-val-per-class', '2',
                    '--cfg-options', 'train_cfg.max_epochs=1',
                    'train_cfg.val_interval=1']
        sys.path.insert(0, {osp.join(REPO_ROOT, 'tools')!r})
        import demo_video
        demo_video.run_tool(demo_video.main)
        ''', cwd=str(tmp_path), timeout=600)
    assert '[demo] video, softpool pooling: on the 8 val clips' in result.stdout
    with open(tmp_path / 'work' / 'metrics.json') as f:
        metrics = json.load(f)
    assert metrics['classes'] == list(ACTION_CLASSES)
    matrix = np.array(metrics['confusion_matrix'])
    assert matrix.shape == (4, 4) and matrix.sum() == 8
    assert matrix.sum(axis=1).tolist() == [2, 2, 2, 2]  # rows: true class
    assert metrics['acc/top1'] == pytest.approx(np.trace(matrix) / 8)
    image = cv2.imread(str(tmp_path / 'work' / 'confusion_matrix.png'))
    assert image is not None and min(image.shape[:2]) > 100


def test_mmsoftpool_imports_without_mmaction(tmp_path):
    """Where MMAction2 is not installed, ``import mmsoftpool`` works, the
    generator works, and only the MMAction2 dataset is absent."""
    result = run_python(f'''
        import sys

        class NoMMAction:
            def find_spec(self, name, path=None, target=None):
                if name == 'mmaction' or name.startswith('mmaction.'):
                    raise ModuleNotFoundError(f'No module named {{name!r}}',
                                              name=name)

        sys.meta_path.insert(0, NoMMAction())
        import mmsoftpool
        from mmsoftpool.datasets import action_demo
        assert not hasattr(action_demo, 'DemoActionsDataset')
        assert 'mmaction' not in sys.modules
        action_demo.generate_action_demo({str(tmp_path / 'clips')!r},
                                         num_train_per_class=1,
                                         num_val_per_class=1)
        print('ok')
        ''')
    assert result.stdout.split()[-1] == 'ok'
