"""The demo dataset generator and a shortened run of ``tools/demo.py``."""
import hashlib
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mmsoftpool.datasets import (
    DEMO_CLASSES,
    DemoShapesCocoDataset,
    ensure_demo_dataset,
    generate_demo_dataset,
)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SMALL = dict(num_train=6, num_val=3, image_size=128, seed=0)


def tree_digest(root):
    """{relative path: sha256} of every file under ``root``."""
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = osp.join(folder, name)
            with open(path, 'rb') as f:
                digests[osp.relpath(path, root)] = hashlib.sha256(
                    f.read()).hexdigest()
    return digests


def test_generator_is_deterministic(tmp_path):
    generate_demo_dataset(str(tmp_path / 'a'), **SMALL)
    generate_demo_dataset(str(tmp_path / 'b'), **SMALL)
    first, second = tree_digest(tmp_path / 'a'), tree_digest(tmp_path / 'b')
    assert len(first) == SMALL['num_train'] + SMALL['num_val'] + 2
    assert first == second
    for split in ('train', 'val'):
        ann = f'annotations/instances_{split}.json'
        with open(tmp_path / 'a' / ann) as fa, open(tmp_path / 'b' / ann) as fb:
            assert json.load(fa) == json.load(fb)

    generate_demo_dataset(str(tmp_path / 'c'), **dict(SMALL, seed=1))
    other = tree_digest(tmp_path / 'c')
    assert other.keys() == first.keys()
    assert all(other[k] != first[k] for k in first if k.endswith('.png'))


def test_annotations_match_the_pixels(tmp_path):
    root = str(tmp_path / 'demo')
    generate_demo_dataset(root, **SMALL)
    coco = COCO(osp.join(root, 'annotations', 'instances_train.json'))
    assert [coco.cats[i]['name'] for i in sorted(coco.cats)] == list(
        DEMO_CLASSES)
    assert sorted(coco.imgs) == list(range(1, SMALL['num_train'] + 1))
    for image_id, info in coco.imgs.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert anns, f'image {image_id} has no object'
        union = np.zeros((info['height'], info['width']), dtype=bool)
        for ann in anns:
            mask = coco.annToMask(ann).astype(bool)
            assert not (union & mask).any(), 'objects overlap'
            union |= mask
            assert ann['area'] == mask.sum() > 0
            # The box is the polygon's extent, so it holds the whole mask.
            x, y, w, h = ann['bbox']
            mx, my, mw, mh = mask_utils.toBbox(mask_utils.encode(
                np.asfortranarray(mask.astype(np.uint8))))
            assert x - 1 <= mx and y - 1 <= my
            assert mx + mw <= x + w + 1 and my + mh <= y + h + 1
            assert 0 <= x and 0 <= y
            assert x + w <= info['width'] and y + h <= info['height']
        # Shapes are bright colours on dark noise: once the noise is
        # filtered out, the bright pixels are the annotated masks.
        image = cv2.imread(osp.join(root, 'train', info['file_name']))
        bright = cv2.medianBlur(image, 5).max(axis=2) > 125
        iou = (bright & union).sum() / (bright | union).sum()
        assert iou > 0.9, f'image {image_id}: mask/pixel IoU {iou:.3f}'


def test_ensure_reuses_and_refuses_other_arguments(tmp_path):
    root = str(tmp_path / 'demo')
    ann_files = ensure_demo_dataset(root, **SMALL)
    before = tree_digest(root)
    assert ensure_demo_dataset(root, **SMALL) == ann_files
    assert tree_digest(root) == before
    with pytest.raises(ValueError, match='num_train'):
        ensure_demo_dataset(root, **dict(SMALL, num_train=7))
    with pytest.raises(ValueError, match='num_val=0'):
        generate_demo_dataset(str(tmp_path / 'x'), **dict(SMALL, num_val=0))
    with pytest.raises(ValueError, match='image_size=32'):
        generate_demo_dataset(
            str(tmp_path / 'y'), **dict(SMALL, image_size=32))
    with pytest.raises(FileExistsError, match=root):
        generate_demo_dataset(root, **SMALL)
    assert not osp.exists(tmp_path / 'x') and not osp.exists(tmp_path / 'y')


def test_dataset_generates_then_checks_its_root(tmp_path):
    """DemoShapesCocoDataset makes its data on first use, with the generator
    arguments its config gives, and refuses a root made with others."""
    root = str(tmp_path / 'demo')
    paths = dict(
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=[])
    dataset = DemoShapesCocoDataset(data_root=root + '/', **paths, **SMALL)
    assert len(dataset) == SMALL['num_train']
    before = tree_digest(root)
    with pytest.raises(ValueError) as error:
        DemoShapesCocoDataset(data_root=root, **paths)  # generator defaults
    message = str(error.value)
    assert message.startswith(f'{root} was generated with')
    assert "'num_train': 6" in message and "'num_train': 64" in message
    assert tree_digest(root) == before


def test_a_root_made_meanwhile_is_checked_not_replaced(tmp_path,
                                                       monkeypatch):
    """Two first uses at once (two ranks, two jobs): the one that loses the
    rename checks the folder the other made, and leaves nothing behind."""
    real_rename = os.rename

    def rival_first(root, rival_args):
        """os.rename, after a rival has made ``root`` whole."""
        def rename(src, dst):
            monkeypatch.setattr(os, 'rename', real_rename)
            generate_demo_dataset(root, **rival_args)
            real_rename(src, dst)
        return rename

    same, other = str(tmp_path / 'same'), str(tmp_path / 'other')
    monkeypatch.setattr(os, 'rename', rival_first(same, SMALL))
    ensure_demo_dataset(same, **SMALL)
    monkeypatch.setattr(os, 'rename', rival_first(other, dict(SMALL, seed=1)))
    with pytest.raises(ValueError, match=f'{other} was generated with'):
        ensure_demo_dataset(other, **SMALL)
    assert sorted(os.listdir(tmp_path)) == ['other', 'same']


@pytest.mark.slow
@pytest.mark.parametrize('detector', ['retinanet', 'mask_rcnn'])
def test_short_demo_run_matches_cocoeval(tmp_path, detector):
    data_root, work_dir = tmp_path / 'data', tmp_path / 'work'
    score_thr = ('model.test_cfg.score_thr=0.0' if detector == 'retinanet'
                 else 'model.test_cfg.rcnn.score_thr=0.0')
    # One epoch of one iteration: the model is barely trained, so keep every
    # detection (score_thr 0) to give COCOeval something to score.
    subprocess.run([
        sys.executable,
        osp.join(REPO_ROOT, 'tools', 'demo.py'), '--detector', detector,
        '--pool', 'softpool', '--data-root',
        str(data_root), '--work-dir',
        str(work_dir), '--num-train', '8', '--num-val', '4',
        '--show-images', '2', '--cfg-options', 'train_cfg.max_epochs=1',
        score_thr
    ],
                   check=True,
                   cwd=tmp_path)

    with open(work_dir / 'metrics.json') as f:
        metrics = json.load(f)
    iou_types = ['bbox'] if detector == 'retinanet' else ['bbox', 'segm']
    suffixes = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')
    expected = {f'coco/{t}_{s}' for t in iou_types for s in suffixes}
    assert expected <= metrics.keys()
    assert cv2.imread(str(work_dir / 'predictions.png')) is not None

    # COCOeval run directly on the results CocoMetric dumped.
    gt = COCO(str(data_root / 'annotations' / 'instances_val.json'))
    for iou_type in iou_types:
        result_file = work_dir / f'results.{iou_type}.json'
        with open(result_file) as f:
            results = json.load(f)
        assert results, f'{result_file} holds no detection'
        if iou_type == 'segm':
            # As CocoMetric does: without the boxes, COCOeval takes the mask
            # areas for the small / medium / large ranges.
            for result in results:
                result.pop('bbox')
        evaluator = COCOeval(gt, gt.loadRes(results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        for suffix, value in zip(suffixes, evaluator.stats[:6]):
            # CocoMetric rounds to 3 decimals; -1 marks an empty size range.
            assert metrics[f'coco/{iou_type}_{suffix}'] == pytest.approx(
                round(float(value), 3), abs=1e-9), suffix
