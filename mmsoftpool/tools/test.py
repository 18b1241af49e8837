"""Test (and evaluate) a detector or classifier checkpoint.

Thin over MMEngine's Runner, with the flags of MMDetection's tools/test.py.
The config's ``default_scope`` (mmdet or mmpretrain) decides the library.
"""
from mmengine.registry import METRICS, RUNNERS
from mmengine.runner import Runner

import mmsoftpool  # noqa: F401  registers SoftPool layers and backbones
from mmsoftpool.checkpoint import CHECKPOINT_ERRORS
from mmsoftpool.deployment.onnxruntime_detector import ONNXModelError, onnxruntime_model_cfg
from mmsoftpool.engine import CheckpointMatchHook, CheckpointMismatchError
from mmsoftpool.tools.launch import (
    ToolParser,
    UserError,
    add_check_images_arg,
    add_overwrite_arg,
    check_data,
    checkpoint_source,
    finish_distributed,
    load_config,
    output_path,
    parse_with_launch_args,
    run_tool,
    setup_distributed,
)

# What differs between the libraries: the metric that dumps predictions
# (--out) and the switches of the visualization hook (--show, --show-dir).
DUMP_METRIC = {'mmdet': 'DumpDetResults', 'mmpretrain': 'DumpResults'}
VISUALIZATION_KEYS = {
    'mmdet': dict(on='draw', out_dir='test_out_dir'),
    'mmpretrain': dict(on='enable', out_dir='out_dir'),
}


def parse_args():
    parser = ToolParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint',
        help='checkpoint file; with --backend onnxruntime, the ONNX file of '
        'tools/deployment/export.py --end2end')
    parser.add_argument(
        '--backend',
        choices=('pytorch', 'onnxruntime'),
        default='pytorch',
        help='onnxruntime: evaluate the exported end-to-end detector in ONNX '
        'Runtime (CPU) with the config\'s data, preprocessing and metrics')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='dump predictions to a pickle file for offline evaluation')
    add_overwrite_arg(parser)
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. '
        'If specified, it will be automatically saved '
        'to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--allow-partial',
        action='store_true',
        help='evaluate a checkpoint that leaves some of the model\'s '
        'parameters unset (by default that is refused, listing them)')
    add_check_images_arg(parser)
    return parse_with_launch_args(parser)


def library_of(cfg, option):
    """The library (default_scope) of ``cfg``, one that ``option`` knows."""
    scope = cfg.get('default_scope')
    if scope not in DUMP_METRIC:
        raise UserError(
            f'{option}: supported for configs with default_scope '
            f'{" or ".join(DUMP_METRIC)}, got default_scope={scope!r}')
    return scope


def enable_visualization(cfg, args):
    keys = VISUALIZATION_KEYS[library_of(cfg, '--show/--show-dir')]
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise UserError(
            '--show/--show-dir: the config has no default_hooks.'
            'visualization (the library\'s VisualizationHook) to draw with')
    hook[keys['on']] = True
    if args.show:
        hook.show = True
        hook.wait_time = args.wait_time
    if args.show_dir:
        hook[keys['out_dir']] = args.show_dir


def require_all_parameters(cfg, required: bool) -> None:
    """The config's CheckpointMatchHook (added if absent) refuses a
    checkpoint that leaves model parameters unset, unless not required."""
    hooks = cfg.setdefault('custom_hooks', [])
    match = [hook for hook in hooks if hook.get('type') in
             ('CheckpointMatchHook', CheckpointMatchHook)]
    if not match:
        match = [dict(type='CheckpointMatchHook')]
        hooks.append(match[0])
    for hook in match:
        hook['require_all'] = required


def use_onnxruntime(cfg, args) -> None:
    """The config's model becomes the ONNX file run in ONNX Runtime (a
    missing or foreign file fails when the Runner builds it)."""
    if library_of(cfg, '--backend onnxruntime') != 'mmdet':
        raise UserError('--backend onnxruntime evaluates detectors (mmdet '
                        f'configs), not default_scope={cfg.default_scope!r}')
    if args.launcher != 'none':
        raise UserError('--backend onnxruntime runs in one process, not '
                        f'--launcher {args.launcher}')
    onnxruntime_model_cfg(cfg, args.checkpoint)


def main():
    args = parse_args()
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise UserError(
                f'--out must name a .pkl or .pickle file, got --out {args.out}')
        output_path(args.out, '--out', args.overwrite)
    cfg = load_config(args.config, args.cfg_options, args.work_dir,
                      args.launcher)
    if args.backend == 'onnxruntime':
        use_onnxruntime(cfg, args)
    else:
        checkpoint_source(args.checkpoint, 'checkpoint')
        cfg.load_from = args.checkpoint
        require_all_parameters(cfg, not args.allow_partial)
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    dump_metric = (
        DUMP_METRIC[library_of(cfg, '--out')] if args.out else None)

    # Missing or broken data fails here, naming the file, not mid-epoch.
    check_data(cfg, ('test', ), args.check_images)
    setup_distributed(cfg)
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    if dump_metric is not None:
        # Built after the Runner so that the config's scope is the default.
        runner.test_evaluator.metrics.append(
            METRICS.build(dict(type=dump_metric, out_file_path=args.out)))
    try:
        runner.test()
    except CheckpointMismatchError as err:
        raise UserError(str(err)) from None
    # After a failure the group is left as it is (see finish_distributed).
    finish_distributed()


def cli():
    # a damaged or refused checkpoint, or a URL that cannot be downloaded:
    # the loader's one-line message names it
    # and an ONNX file or input that does not fit (--backend onnxruntime)
    run_tool(main, CHECKPOINT_ERRORS + (ONNXModelError, ))


if __name__ == '__main__':
    cli()
