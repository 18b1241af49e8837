"""Train and evaluate a detector on the generated demo dataset, on CPU.

Loads a config under ``configs/demo/``, points its datasets and evaluators at
``--data-root`` (the dataset is generated there on first use) and trains it
in this process with MMEngine's Runner, built as ``tools/train.py`` builds it
(mmdet's CocoMetric scores the val split during and at the end of training).
Then it writes beside the run:

* ``metrics.json``: the metrics of the last validation, keyed as CocoMetric
  names them (``coco/bbox_mAP``, ``coco/bbox_mAP_50``, ...);
* ``results.bbox.json`` (and ``results.segm.json``): the val predictions in
  COCO's result format, as CocoMetric dumped them;
* ``predictions.png``: ground truth (left) and predictions (right) on a few
  val images, drawn by mmdet's DetLocalVisualizer.

Example::

    python tools/demo.py --detector retinanet --pool softpool
"""
import json
import os.path as osp
import time

import cv2
import mmcv
import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmdet.visualization import DetLocalVisualizer
from mmengine.structures import InstanceData
from pycocotools import mask as mask_utils

from mmsoftpool.datasets import ensure_demo_dataset
from mmsoftpool.tools.launch import (
    ToolParser,
    UserError,
    add_cfg_options_arg,
    load_config,
    positive_int,
    run_tool,
    user_errors,
)
from mmsoftpool.tools.train import train_keeping_last_validation

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {
    ('retinanet', 'softpool'): 'retinanet_r18_softpool_demo.py',
    ('retinanet', 'max'): 'retinanet_r18_maxpool_demo.py',
    ('mask_rcnn', 'softpool'): 'mask-rcnn_r18_softpool_demo.py',
    ('mask_rcnn', 'max'): 'mask-rcnn_r18_maxpool_demo.py',
}
METRIC_NAMES = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')


def parse_args(argv=None):
    parser = ToolParser(
        description='Train and evaluate a SoftPool (or max-pool) detector on '
        'the generated demo dataset')
    parser.add_argument(
        '--detector', choices=('retinanet', 'mask_rcnn'), default='retinanet')
    parser.add_argument(
        '--pool',
        choices=('softpool', 'max'),
        default='softpool',
        help='pooling of the backbone stem')
    parser.add_argument(
        '--data-root',
        default='data/demo',
        help='where the dataset is generated on first use')
    parser.add_argument(
        '--work-dir',
        help='defaults to work_dirs/demo/<detector>_<pool>')
    parser.add_argument(
        '--num-train',
        type=positive_int,
        default=64,
        help='number of generated training images')
    parser.add_argument(
        '--num-val',
        type=positive_int,
        default=32,
        help='number of generated validation images')
    parser.add_argument(
        '--show-images',
        type=positive_int,
        default=4,
        help='number of val images drawn in predictions.png')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='train under CPU bfloat16 autocast (CPUAmpOptimWrapper)')
    add_cfg_options_arg(parser)
    return parser.parse_args(argv)


def use_demo_data(cfg, data_root: str, num_train: int, num_val: int) -> dict:
    """Point every dataloader and evaluator of ``cfg`` at the demo dataset
    under ``data_root``, generated with ``num_train`` and ``num_val`` images
    (made now if it is missing); returns its annotation files."""
    with user_errors(FileNotFoundError, ValueError):  # not the data asked for
        ann_files = ensure_demo_dataset(data_root, num_train, num_val)
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.update(
            data_root=osp.join(data_root, ''),
            num_train=num_train,
            num_val=num_val)
    for split in ('val', 'test'):
        cfg[f'{split}_evaluator'].ann_file = ann_files['val']
    return ann_files


def format_table(metrics: dict) -> str:
    """COCO AP by IoU type, as a small Markdown table."""
    iou_types = [t for t in ('bbox', 'segm') if f'coco/{t}_mAP' in metrics]
    lines = [
        '| metric | ' + ' | '.join(iou_types) + ' |',
        '| --- |' + ' --- |' * len(iou_types)
    ]
    for name in METRIC_NAMES:
        cells = [f'{metrics[f"coco/{t}_{name}"]:.3f}' for t in iou_types]
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _instances(records, labels, image_shape, scale, with_masks):
    """COCO-format annotations or results as mmdet's InstanceData, scaled."""
    instances = InstanceData()
    instances.bboxes = scale * torch.tensor(
        [[x, y, x + w, y + h] for x, y, w, h in (r['bbox'] for r in records)],
        dtype=torch.float32).reshape(-1, 4)
    instances.labels = torch.tensor(
        [labels[r['category_id']] for r in records], dtype=torch.long)
    if records and 'score' in records[0]:  # results, not ground truth
        instances.scores = torch.tensor([r['score'] for r in records])
    if with_masks:
        height, width = image_shape
        masks = np.zeros((len(records), height * scale, width * scale), bool)
        for i, r in enumerate(records):
            segm = r['segmentation']
            if isinstance(segm, list):  # polygons (ground truth)
                segm = mask_utils.merge(
                    mask_utils.frPyObjects(segm, height, width))
            masks[i] = cv2.resize(
                mask_utils.decode(segm), (width * scale, height * scale),
                interpolation=cv2.INTER_NEAREST)
        instances.masks = masks
    return instances


def draw_predictions(metainfo: dict, result_file: str, ann_file: str,
                     img_dir: str, out_file: str, num_images: int,
                     scale: int = 3) -> None:
    """Ground truth beside predictions for the first val images, one PNG.

    ``metainfo`` is the val dataset's (classes and palette). The 128x128
    images are enlarged ``scale`` times so that labels and scores stay
    readable.
    """
    with open(ann_file) as f:
        coco = json.load(f)
    with open(result_file) as f:
        results = json.load(f)
    # Labels as mmdet's CocoDataset numbers them: by the config's classes.
    classes = list(metainfo['classes'])
    labels = {c['id']: classes.index(c['name']) for c in coco['categories']}
    with_masks = bool(results) and 'segmentation' in results[0]

    visualizer = DetLocalVisualizer.get_instance(
        'mmsoftpool_demo', line_width=2, alpha=0.6)
    visualizer.dataset_meta = dict(
        classes=classes, palette=metainfo['palette'])
    panels = []
    for info in sorted(coco['images'], key=lambda i: i['id'])[:num_images]:
        image = mmcv.imread(
            osp.join(img_dir, info['file_name']), channel_order='rgb')
        image = mmcv.imrescale(image, scale, interpolation='nearest')
        shape = (info['height'], info['width'])
        sample = DetDataSample()
        sample.gt_instances = _instances(
            [a for a in coco['annotations'] if a['image_id'] == info['id']],
            labels, shape, scale, with_masks)
        sample.pred_instances = _instances(
            [r for r in results if r['image_id'] == info['id']], labels,
            shape, scale, with_masks)
        visualizer.add_datasample(
            info['file_name'], image, sample, draw_gt=True, show=False)
        panels.append(visualizer.get_image())
    if len(panels) % 2:  # two panels a row
        panels.append(np.zeros_like(panels[0]))
    rows = [np.hstack(panels[i:i + 2]) for i in range(0, len(panels), 2)]
    mmcv.imwrite(mmcv.rgb2bgr(np.vstack(rows)), out_file)


def main(argv=None):
    demo_start = time.time()
    args = parse_args(argv)
    config = osp.join(REPO_ROOT, 'configs', 'demo',
                      CONFIGS[(args.detector, args.pool)])
    work_dir = args.work_dir or osp.join('work_dirs', 'demo',
                                         f'{args.detector}_{args.pool}')
    cfg = load_config(config, args.cfg_options, work_dir, 'none')
    if args.amp:  # MMEngine's AmpOptimWrapper needs a GPU
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'
    ann_files = use_demo_data(cfg, args.data_root, args.num_train,
                              args.num_val)
    # CocoMetric dumps its COCO-format results there at each validation.
    outfile_prefix = osp.join(cfg.work_dir, 'results')
    cfg.val_evaluator.outfile_prefix = outfile_prefix

    start = time.time()
    last_metrics = train_keeping_last_validation(cfg)
    train_seconds = time.time() - start

    metrics = {k: v for k, v in last_metrics.items() if k.startswith('coco/')}
    if 'coco/bbox_mAP' not in metrics:
        raise UserError(
            'the last validation gave no COCO metric: CocoMetric found no '
            'detection to evaluate (see the log above); train longer, or keep '
            'every box: --cfg-options model.test_cfg.score_thr=0.0 '
            '(model.test_cfg.rcnn.score_thr=0.0 for Mask R-CNN)')
    metrics_file = osp.join(cfg.work_dir, 'metrics.json')
    with open(metrics_file, 'w') as f:
        json.dump(metrics, f, indent=2)

    # Mask R-CNN's segm results hold boxes, scores and masks; RetinaNet has
    # only bbox results.
    result_file = f'{outfile_prefix}.segm.json'
    if args.detector == 'retinanet':
        result_file = f'{outfile_prefix}.bbox.json'
    if not osp.isfile(result_file) or osp.getmtime(result_file) < start:
        raise FileNotFoundError(f'{result_file} was not written by this run')
    png_file = osp.join(cfg.work_dir, 'predictions.png')
    draw_predictions(cfg.val_dataloader.dataset.metainfo, result_file,
                     ann_files['val'], osp.join(args.data_root, 'val'),
                     png_file, args.show_images)

    print(f'\n[demo] {args.detector}, {args.pool} pooling: COCO AP on the '
          f'{args.num_val} val images\n' + format_table(metrics))
    print(f'[demo] metrics: {metrics_file}\n[demo] predictions: {png_file}')
    print(f'[demo] wall time: {train_seconds / 60:.1f} min training, '
          f'{(time.time() - demo_start) / 60:.1f} min in all')


if __name__ == '__main__':
    run_tool(main)
