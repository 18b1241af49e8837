"""What ``tools/train.py`` and ``tools/test.py`` share: loading the config
and preparing the (distributed) environment before MMEngine's Runner is built.

The config's ``default_scope`` (``mmdet``, ``mmpretrain``) decides which
library's registries the Runner uses; nothing here is specific to one.
"""
import argparse
import os
import os.path as osp
from typing import Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, DictAction

# DDP on CPU: no device_ids (the Runner's default passes [LOCAL_RANK], which
# DistributedDataParallel refuses for a CPU module).
CPU_MODEL_WRAPPER_CFG = dict(
    type='MMDistributedDataParallel',
    device_ids=None,
    broadcast_buffers=False)


def parse_with_launch_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Add the flags both tools share with MMDetection's (``--cfg-options``,
    ``--launcher``, ``--local-rank``) to ``parser`` and parse the command line."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
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
    cfg = Config.fromfile(config)
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
