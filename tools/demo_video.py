"""Train and evaluate a small 3-D recognizer on the generated action clips,
on CPU.

Loads ``configs/video/demo/r3d18_<pool>_demo.py``, points its datasets at
``--data-root`` (the clips are generated there on first use:
``mmsoftpool/datasets/action_demo.py``) and trains it in this process with
MMEngine's Runner, built as ``tools/train.py`` builds it; MMAction2's
AccMetric and ConfusionMatrix score the val split. Then it writes beside the
run:

* ``metrics.json``: the last validation's ``acc/top1`` and ``acc/mean1``
  (MMAction2's names), the confusion matrix (rows: true class, columns:
  predicted) and the class names;
* ``confusion_matrix.png``: that matrix, drawn by MMAction2's
  ``ConfusionMatrix.plot``.

Example::

    python tools/demo_video.py --pool softpool
"""
import json
import os.path as osp
import time

import matplotlib
import torch
from mmaction.evaluation import ConfusionMatrix

from mmsoftpool.datasets import ACTION_CLASSES
from mmsoftpool.datasets.action_demo import DemoActionsDataset
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
    'softpool': 'r3d18_softpool_demo.py',
    'max': 'r3d18_maxpool_demo.py',
}


def parse_args(argv=None):
    parser = ToolParser(
        description='Train and evaluate a SoftPool (or max-pool) 3-D '
        'recognizer on the generated action clips')
    parser.add_argument(
        '--pool',
        choices=sorted(CONFIGS),
        default='softpool',
        help='pooling of the backbone (stem and temporal pool)')
    parser.add_argument(
        '--data-root',
        default='data/demo_video',
        help='where the clips are generated on first use')
    parser.add_argument(
        '--work-dir', help='defaults to work_dirs/demo_video/r3d18_<pool>')
    parser.add_argument(
        '--num-train-per-class',
        type=positive_int,
        help='number of generated training clips of each action (the '
        'generator\'s default: 100)')
    parser.add_argument(
        '--num-val-per-class',
        type=positive_int,
        help='number of generated validation clips of each action (the '
        'generator\'s default: 25)')
    add_cfg_options_arg(parser)
    return parser.parse_args(argv)


def write_confusion_matrix(matrix: torch.Tensor, out_file: str) -> None:
    matplotlib.use('Agg')  # a file only, also where a display is set
    figure = ConfusionMatrix.plot(
        matrix, include_values=True, classes=list(ACTION_CLASSES),
        show=False)
    figure.savefig(out_file, dpi=60, bbox_inches='tight')
    matplotlib.pyplot.close(figure)


def main(argv=None):
    demo_start = time.time()
    args = parse_args(argv)
    config = osp.join(REPO_ROOT, 'configs', 'video', 'demo',
                      CONFIGS[args.pool])
    work_dir = args.work_dir or osp.join('work_dirs', 'demo_video',
                                         f'r3d18_{args.pool}')
    cfg = load_config(config, args.cfg_options, work_dir, 'none')
    # One dataset, generated once: every split's config names the same
    # generator arguments (a mismatch is an error, never a silent reuse).
    generator = dict(root=args.data_root)
    for name in ('num_train_per_class', 'num_val_per_class'):
        if getattr(args, name) is not None:
            generator[name] = getattr(args, name)
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.update(generator)
    # made or checked now: a --data-root made otherwise is the user's
    with user_errors(FileNotFoundError, ValueError):
        DemoActionsDataset.generate_if_missing(cfg.train_dataloader.dataset)

    start = time.time()
    found = train_keeping_last_validation(cfg)
    train_seconds = time.time() - start

    if 'acc/top1' not in found or 'confusion_matrix/result' not in found:
        raise UserError(
            'the last validation gave no accuracy and confusion matrix; the '
            'config\'s val_evaluator must hold AccMetric and ConfusionMatrix '
            f'(it gave {sorted(found)})')
    matrix = found['confusion_matrix/result']
    metrics = {
        'acc/top1': found['acc/top1'],
        'acc/mean1': found['acc/mean1'],
        'confusion_matrix': matrix.tolist(),
        'classes': list(ACTION_CLASSES),
    }
    metrics_file = osp.join(cfg.work_dir, 'metrics.json')
    with open(metrics_file, 'w') as f:
        json.dump(metrics, f, indent=2)
    png_file = osp.join(cfg.work_dir, 'confusion_matrix.png')
    write_confusion_matrix(matrix, png_file)

    print(f'\n[demo] video, {args.pool} pooling: on the '
          f'{int(matrix.sum())} val clips, top-1 accuracy '
          f'{metrics["acc/top1"]:.3f}, mean class accuracy '
          f'{metrics["acc/mean1"]:.3f}')
    print(f'[demo] metrics: {metrics_file}\n'
          f'[demo] confusion matrix: {png_file}')
    print(f'[demo] wall time: {train_seconds / 60:.1f} min training, '
          f'{(time.time() - demo_start) / 60:.1f} min in all')


if __name__ == '__main__':
    run_tool(main)
