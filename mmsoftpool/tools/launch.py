"""What the command-line tools share: their user errors (one line, exit
code 2: :func:`run_tool`, :class:`ToolParser`, the argument checks, the
``--overwrite`` rule of :func:`output_path`) and, for ``tools/train.py`` and
``tools/test.py``, loading the config and preparing the (distributed)
environment before MMEngine's Runner is built.

The config's ``default_scope`` (``mmdet``, ``mmpretrain``) decides which
library's registries the Runner uses; nothing here is specific to one.
"""
import argparse
import ast
import contextlib
import os
import os.path as osp
import sys
import time
from typing import Callable, Optional, Tuple, Type

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


def run_tool(main: Callable[[], None],
             user_errors: Tuple[Type[BaseException], ...] = ()) -> None:
    """Run a tool's ``main``, turning a :class:`UserError` into one message
    on stderr and exit code 2; likewise an exception of ``user_errors``
    (e.g. ``mmsoftpool.checkpoint.CHECKPOINT_ERRORS``: a file the user named
    is missing or bad, said in one line naming it) and a failure that a
    ``--cfg-options`` value of the wrong type caused (:func:`load_config`).
    Any other exception keeps its traceback: it is a bug."""
    try:
        main()
        return
    except UserError as err:
        message = str(err)
    except user_errors as err:
        message = str(err)
    except (ValueError, TypeError, AssertionError, KeyError) as err:
        message = _blame_cfg_option(err)
        if message is None:
            raise
    print(f'{osp.basename(sys.argv[0])}: error: {message}', file=sys.stderr)
    sys.exit(2)


@contextlib.contextmanager
def user_errors(*types: Type[BaseException]):
    """Exceptions of ``types`` raised inside become UserErrors with the
    same message: for the calls that read what the user named (a
    missing file, one that is not what the tool reads), whose errors say
    what is wrong; around those calls only, so a bug keeps its traceback."""
    try:
        yield
    except types as err:
        raise UserError(str(err)) from None


class ToolParser(argparse.ArgumentParser):
    """argparse's parser with its errors in one line, as :func:`run_tool`
    prints them (``prog: error: message``, exit code 2); the usage is in
    ``--help``."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message}\n')


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type=`` for counts and sizes: an integer >= ``minimum``
    (argparse then names the argument: ``argument --batch-size: ...``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f'expected an integer >= {minimum}, got {text!r}')
        return value

    return parse


positive_int = int_at_least(1)


def device_arg(text: str) -> str:
    """An argparse ``type=`` for ``--device``: one torch knows and this
    machine has (torch would fail later, deep in model building)."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a device (cpu, cuda, cuda:1, ...)') from None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == 'cuda' and (device.index or 0) >= count:
        raise argparse.ArgumentTypeError(
            f'{text!r}: this machine has {count} usable CUDA devices')
    return text


def add_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--overwrite', action='store_true',
        help='replace output files that exist (by default the tool refuses)')


def output_path(path, option: str, overwrite: bool, folder: bool = False):
    """``path``, a file the tool is about to write (with ``folder``: a
    folder it fills), checked before any work: an existing one is replaced
    only with ``--overwrite``, so a repeated command does not silently
    destroy an earlier result. ``option`` names the argument in errors."""
    ancestor = osp.dirname(osp.abspath(path))  # the tools make missing ones
    while not osp.exists(ancestor):
        ancestor = osp.dirname(ancestor)
    if not osp.isdir(ancestor):
        raise UserError(f'{option} {path}: {ancestor} is a file, not a folder')
    if osp.exists(path) and osp.isdir(path) != folder:
        raise UserError(f'{option} {path} is a {"file" if folder else "folder"}'
                        f', not a {"folder" if folder else "file"}')
    if osp.exists(path) and not overwrite and (not folder or os.listdir(path)):
        raise UserError(
            f'{option} {path} exists; pass --overwrite to replace it')
    return path


def checkpoint_source(path: str, option: str) -> str:
    """``path``, a checkpoint to read: a local one must be a file, checked
    before the model is built. URLs (``https://``, ``torchvision://``,
    ``work_dir://``, ...) are left to mmsoftpool.checkpoint's loaders, whose
    errors (CHECKPOINT_ERRORS) the tools report with :func:`run_tool`."""
    if '://' not in path and osp.isdir(path):
        raise UserError(f'{option}: {path!r} is a folder, not a checkpoint')
    if '://' not in path and not osp.isfile(path):
        raise UserError(f'{option}: no such file {path!r}')
    return path


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


def add_cfg_options_arg(
        parser: argparse.ArgumentParser,
        help: str = 'overrides of the config, KEY=VALUE, e.g. '
        'train_cfg.max_epochs=2') -> None:
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptions,
                        help=help)


def parse_with_launch_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Add the flags both tools share with MMDetection's (``--cfg-options``,
    ``--launcher``, ``--local-rank``) to ``parser`` and parse the command line."""
    add_cfg_options_arg(
        parser, 'override some settings in the used config, the key-value '
        'pair in xxx=yyy format will be merged into config file. If the value '
        'to be overwritten is a list, it should be like key="[a,b]" or key=a,b '
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
    if osp.isdir(config):
        raise UserError(f'config {config!r} is a folder, not a config file')
    if not osp.isfile(config):
        raise UserError(f'config file {config!r} does not exist')
    try:
        cfg = Config.fromfile(config)
    except SyntaxError as err:
        raise UserError(_syntax_error(config) or
                        f'syntax error in {config!r} or its bases: {err}')
    except FileNotFoundError as err:  # a _base_ file
        raise UserError(f'{config!r}: {err}')
    except Exception as err:  # the file runs as Python: NameError, ImportError
        # of custom_imports, an unsupported suffix, a YAML error, ...
        raise UserError(f'{config!r}: {type(err).__name__}: '
                        f'{" ".join(str(err).split())}') from None
    check_launcher(launcher)
    cfg.launcher = launcher
    _cfg_options.clear()  # those of this run only (tests run tools in-process)
    if cfg_options is not None:
        _cfg_options.update({key: (_config_value(cfg, key), value)
                             for key, value in cfg_options.items()})
        cfg.merge_from_dict(cfg_options)
    # work_dir: command line, then the config, then the config's file name.
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    # a folder (or one to make); runs add to it, so no --overwrite
    output_path(cfg.work_dir, '--work-dir' if work_dir else 'work_dir',
                overwrite=True, folder=True)
    return cfg


# The --cfg-options of this run: KEY -> (what the config held there, the
# new value). MMEngine takes a value as it reads (train_cfg.max_epochs=abc
# stays the string 'abc'); what fails on it is deep in the Runner (int('abc')
# in a loop's constructor), so run_tool blames the option when the failure
# shows it was the cause (_blame_cfg_option).
_cfg_options = {}


def _config_value(cfg, key: str):
    """The value at the dotted ``key`` (list items by index), or None."""
    value = cfg
    for part in key.split('.'):
        try:
            value = value[int(part)] if isinstance(value,
                                                   (list, tuple)) else value[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return None
    return value


def _retyped(old, new) -> bool:
    """A string or a float where the config held a number."""
    return type(old) in (int, float, bool) and (
        isinstance(new, str) or type(old) is int and type(new) is float)


def _blame_cfg_option(err: BaseException) -> Optional[str]:
    """The one-line error for a failure a --cfg-options value caused: the
    message names the option with the value (``batch_size=0``); or, for a
    value of another type than the config held, the code that failed held
    it (a local variable of a frame of the traceback: ``batch_size='abc'``
    in DataLoader), or the message shows it (``int('abc')``), or, a
    TypeError, says a str was given where a number was due (``1 % 'abc'``).
    None where it is none of them: a bug, kept with its traceback."""
    text = ' '.join(str(err).split())
    for key, (old, new) in _cfg_options.items():
        retyped = _retyped(old, new)
        if f'{key.split(".")[-1]}={new}' in text or retyped and (
                repr(new) in text or _in_frames(err.__traceback__, new) or
                isinstance(err, TypeError) and isinstance(new, str)
                and "'str'" in text):
            cause = f'{type(err).__name__}: {text}'
            if retyped:
                cause = (f'the config has {type(old).__name__} {old!r} there '
                         f'({cause})')
            return f'--cfg-options {key}={new}: {cause}'
    return None


def _in_frames(tb, value) -> bool:
    while tb is not None:
        if any(type(v) is type(value) and v == value
               for v in tb.tb_frame.f_locals.values()):
            return True
        tb = tb.tb_next
    return False


# What each launcher reads from the environment (MMEngine's init_dist, which
# fails with a KeyError without it): the variables its starter sets.
LAUNCHER_ENV = {
    'pytorch': ('torchrun (tools/dist_train.sh, tools/dist_test.sh)',
                ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')),
    'slurm': ('srun (tools/slurm_train.sh)',
              ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST')),
    'mpi': ('mpirun', ('OMPI_COMM_WORLD_LOCAL_RANK', 'OMPI_COMM_WORLD_SIZE',
                       'OMPI_COMM_WORLD_RANK', 'MASTER_ADDR')),
}


def check_launcher(launcher: str) -> None:
    """Before any work: the environment ``--launcher`` needs is there."""
    if launcher not in LAUNCHER_ENV:
        return
    starter, names = LAUNCHER_ENV[launcher]
    missing = [name for name in names if name not in os.environ]
    if missing:
        raise UserError(f'--launcher {launcher} expects the environment of '
                        f'{starter}; {", ".join(missing)} not set')
    if launcher != 'pytorch' and not torch.cuda.is_available():
        # only the pytorch launcher has a CPU path (setup_distributed)
        raise UserError(f'--launcher {launcher} needs CUDA, and this machine '
                        'has no usable CUDA device; on CPU use --launcher '
                        'pytorch under torchrun')


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
    with user_errors(FileNotFoundError, ValueError):
        check_data_config(cfg, splits, images=images)


def setup_distributed(cfg: Config) -> None:
    """Start the process group when ``torch.distributed`` runs without CUDA.

    MMEngine's ``pytorch`` launcher selects a CUDA device unconditionally, so
    on a CPU-only machine (``--launcher pytorch`` under torchrun) the process
    group is started here with the gloo backend and the Runner, finding it
    initialised, uses it. The config gets a CPU-capable DDP wrapper unless it
    sets ``model_wrapper_cfg`` itself. With CUDA nothing changes.
    (:func:`load_config` checked that torchrun's environment is there.)
    """
    if cfg.launcher != 'pytorch' or torch.cuda.is_available():
        return
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend='gloo')
    # For the record (the saved config): the group above is gloo.
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(CPU_MODEL_WRAPPER_CFG)


# How long finish_distributed leaves gloo's worker threads the GIL: ample
# for the OS to run them on a loaded machine (2 gloo processes ending right
# after a collective, every core busy: 4 of 20 aborted without the pause,
# none of 30 with 0.1 s).
GLOO_DRAIN_S = 0.2


def finish_distributed() -> None:
    """End a finished run's process group (``setup_distributed``'s or
    MMEngine's), if there is one: wait for every rank, destroy it (as
    PyTorch asks at the end of a program) and, with gloo, give its worker
    threads the time to let go of their last work.

    A gloo worker thread releases a finished collective's tensors after the
    caller has its result; where Python no longer holds them, that takes the
    GIL. Still doing so when the interpreter finalizes, the thread is ended
    by Python mid-destructor and the process aborts (SIGABRT, ``terminate
    called without an active exception``), now and then, under load.
    ``destroy_process_group`` does not stop gloo's threads (torch keeps the
    group referenced until exit), so the main thread sleeps, without the
    GIL, for ``GLOO_DRAIN_S``. Only for a run that succeeded: after a failure
    another rank may never reach the barrier.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    gloo = torch_dist.get_backend() == 'gloo'
    torch_dist.barrier()
    torch_dist.destroy_process_group()
    if gloo:
        time.sleep(GLOO_DRAIN_S)
