"""Train a detector or classifier from an MMEngine config.

Thin over MMEngine's Runner, with the flags of MMDetection's tools/train.py.
The config's ``default_scope`` (mmdet or mmpretrain) decides the library.
"""
import logging

from mmengine.device import get_device
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmsoftpool  # noqa: F401  registers SoftPool layers and backbones
from mmsoftpool.checkpoint import CHECKPOINT_ERRORS
from mmsoftpool.engine import CheckpointMismatchError, LastValidationHook, find_resumable_checkpoint
from mmsoftpool.tools.launch import (
    ToolParser,
    UserError,
    add_check_images_arg,
    check_data,
    checkpoint_source,
    finish_distributed,
    load_config,
    parse_with_launch_args,
    run_tool,
    setup_distributed,
)


def parse_args():
    parser = ToolParser(description='Train a model')
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
        'in the work directory (skipping damaged ones).')
    add_check_images_arg(parser)
    return parse_with_launch_args(parser)


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, args.work_dir,
                      args.launcher)

    if args.amp:
        if get_device() in ('cpu', 'mps'):  # what AmpOptimWrapper asserts
            raise UserError('--amp: mixed precision needs a CUDA, NPU, MLU '
                            'or MUSA device, and this machine has none')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise UserError(
                f'--auto-scale-lr: {args.config} has no '
                '"auto_scale_lr.base_batch_size" (the batch size its '
                'learning rate was set for)')
        cfg.auto_scale_lr.enable = True

    # --resume PATH resumes from PATH; --resume alone from what
    # last_checkpoint names if it is whole, else the newest whole checkpoint
    # of the same kind (MMEngine would take the named one even if damaged).
    if args.resume == 'auto':
        cfg.resume = True
        found = find_resumable_checkpoint(cfg.work_dir)
        for path, reason in found.skipped:
            print_log(f'--resume: skipping damaged checkpoint {path!r}: '
                      f'{reason}', logger='current', level=logging.WARNING)
        if found.path is None and found.skipped:
            raise UserError(f'--resume: {found.reason}')
        if found.path is not None:
            print_log(f'--resume: {found.describe()}', logger='current')
        cfg.load_from = found.path
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = checkpoint_source(args.resume, '--resume')

    build_runner(cfg, args.check_images).train()
    # After a failure the group is left as it is (see finish_distributed).
    finish_distributed()


def build_runner(cfg, check_images: str = 'header') -> Runner:
    """The Runner ``cfg`` asks for, once its training data is checked (also
    used by ``tools/demo.py``)."""
    # Missing or broken data fails here, naming the file, not mid-epoch.
    check_data(cfg, ('train', 'val'), check_images)
    setup_distributed(cfg)
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


def train_keeping_last_validation(cfg) -> dict:
    """Train as :func:`build_runner` builds the run; returns the metrics of
    its last validation (used by the demos, which report them)."""
    runner = build_runner(cfg)
    last_validation = LastValidationHook()
    runner.register_hook(last_validation, priority='LOWEST')
    runner.train()
    return last_validation.metrics


def cli():
    # a damaged, refused or mismatched checkpoint (--resume, load_from,
    # init_cfg): the loader's or the CheckpointMatchHook's message names it
    run_tool(main, (*CHECKPOINT_ERRORS, CheckpointMismatchError))


if __name__ == '__main__':
    cli()
