"""What ``tools/train.py`` and ``tools/test.py`` share: loading the config
and preparing the (distributed) environment before MMEngine's Runner is built.

The config's ``default_scope`` (``mmdet``, ``mmpretrain``) decides which
library's registries the Runner uses; nothing here is specific to one.
"""
import argparse
import ast
import os
import os.path as osp
import sys
from typing import Callable, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, DictAction

from mmsoftpool.tools.data_checks import IMAGE_CHECKS, check_data_config

# DDP on CPU: no device_ids (the Runner's default passes [LOCAL_RANK], which
# DistributedDataParallel refuses for a CPU module).
CPU_MODEL_WRAPPER_CFG = dict(
    type='MMDistributedDataParallel',
    device_ids=None,
    broadcast_buffers=False)


class UserError(Exception):
    """A mistake in the command line, the config or the data: the tools
    print its message without a traceback and exit with 2. Tracebacks are
    kept for bugs."""


def run_tool(main: Callable[[], None]) -> None:
    """Run a tool's ``main``, turning a :class:`UserError` into one message
    on stderr and exit code 2."""
    try:
        main()
    except UserError as err:
        print(f'{osp.basename(sys.argv[0])}: error: {err}', file=sys.stderr)
        sys.exit(2)


class CfgOptions(DictAction):
    """MMEngine's DictAction, with a one-line error for an item that is
    not KEY=VALUE (DictAction fails with ``not enough values to unpack``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        for item in values:
            if '=' not in item or item.startswith('='):
                parser.exit(
                    2, f'{parser.prog}: error: {option_string}: {item!r} is '
                    'not KEY=VALUE (e.g. train_cfg.max_epochs=12)\n')
        super().__call__(parser, namespace, values, option_string)


def parse_with_launch_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Add the flags both tools share with MMDetection's (``--cfg-options``,
    ``--launcher``, ``--local-rank``) to ``parser`` and parse the command line."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=CfgOptions,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0);
    # torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_config(config: str, cfg_options: Optional[dict],
                work_dir: Optional[str], launcher: str) -> Config:
    """Read ``config``, apply ``--cfg-options``, ``--work-dir`` and
    ``--launcher`` as MMDetection's tools do."""
    if not osp.isfile(config):
        raise UserError(f'config file {config!r} does not exist')
    try:
        cfg = Config.fromfile(config)
    except SyntaxError as err:
        raise UserError(_syntax_error(config) or
                        f'syntax error in {config!r} or its bases: {err}')
    except FileNotFoundError as err:  # a _base_ file
        raise UserError(f'{config!r}: {err}')
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    # work_dir: command line, then the config, then the config's file name.
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    return cfg


def _syntax_error(config: str, seen=()) -> Optional[str]:
    """Where the syntax error of ``config`` or of one of its local
    ``_base_`` files is: MMEngine reports it as ``<unknown>, line N``."""
    try:
        with open(config, encoding='utf-8') as f:
            source = f.read()
        tree = ast.parse(source, filename=config)
    except SyntaxError as err:
        return f'syntax error in {config}, line {err.lineno}: {err.msg}'
    except OSError:
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(t, 'id', None) == '_base_' for t in node.targets):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                return None
            for base in [bases] if isinstance(bases, str) else bases:
                path = osp.normpath(osp.join(osp.dirname(config), base))
                if '::' not in base and path not in seen:
                    found = _syntax_error(path, (*seen, config))
                    if found:
                        return found
    return None


def add_check_images_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--check-images',
        choices=IMAGE_CHECKS,
        default='header',
        help='before the run, read every image\'s header (default, seconds '
        'on COCO) or decode every image in full (finds files cut short; '
        'remembered, so a second run is fast)')


def check_data(cfg: Config, splits, images: str = 'header') -> None:
    """The data pre-flight check (mmsoftpool.tools.data_checks): a missing or
    broken file is a user error, what mmdet will drop a warning."""
    try:
        check_data_config(cfg, splits, images=images)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None


def setup_distributed(cfg: Config) -> None:
    """Start the process group when ``torch.distributed`` runs without CUDA.

    MMEngine's ``pytorch`` launcher selects a CUDA device unconditionally, so
    on a CPU-only machine (``--launcher pytorch`` under torchrun) the process
    group is started here with the gloo backend and the Runner, finding it
    initialised, uses it. The config gets a CPU-capable DDP wrapper unless it
    sets ``model_wrapper_cfg`` itself. With CUDA nothing changes.
    """
    if cfg.launcher != 'pytorch' or torch.cuda.is_available():
        return
    missing = [
        var for var in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
        if var not in os.environ
    ]
    if missing:
        raise RuntimeError(
            '--launcher pytorch expects the environment of torchrun '
            f'(tools/dist_train.sh, tools/dist_test.sh); {", ".join(missing)} '
            'not set')
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend='gloo')
    # For the record (the saved config): the group above is gloo.
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(CPU_MODEL_WRAPPER_CFG)
