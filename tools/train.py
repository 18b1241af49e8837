"""Train a detector or classifier from an MMEngine config.

Thin over MMEngine's Runner, with the flags of MMDetection's tools/train.py.
The config's ``default_scope`` (mmdet or mmpretrain) decides the library.
"""
import argparse

from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmsoftpool  # noqa: F401  registers SoftPool layers and backbones
from mmsoftpool.datasets.checks import check_data_config
from mmsoftpool.launch import (load_config, parse_with_launch_args,
                                setup_distributed)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    return parse_with_launch_args(parser)


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.work_dir,
                      args.launcher)

    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise RuntimeError(
                f'--auto-scale-lr: {args.config} has no '
                '"auto_scale_lr.base_batch_size" (the batch size its '
                'learning rate was set for)')
        cfg.auto_scale_lr.enable = True

    # --resume PATH resumes from PATH; --resume alone from the latest
    # checkpoint in the work directory.
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    # Missing or broken data fails here, naming the file, not mid-epoch.
    check_data_config(cfg, ('train', 'val'))
    setup_distributed(cfg)
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
