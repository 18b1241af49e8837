"""Every command-line tool, called wrongly as a user might: exit code 2 and
one line on stderr that names the argument or the value, no traceback; and
an output file that exists is replaced only with ``--overwrite``."""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY_DEMO, tiny_demo_overrides

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / 'configs/demo/retinanet_r18_softpool_demo.py'
ANALYSIS = 'tools/analysis_tools/'
HAS_CUDA = torch.cuda.is_available()
HAS_MMACTION = importlib.util.find_spec('mmaction') is not None


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """What the bad calls name: files that exist (outputs not to replace,
    a file where a folder is due), a damaged checkpoint, a small image, a
    tiny detection config with its data, and folders."""
    from mmsoftpool.datasets.demo import generate_demo_dataset
    root = tmp_path_factory.mktemp('cli')
    for name in ('existing.pkl', 'existing.json', 'existing.onnx',
                 'existing.png', 'a_file'):
        (root / name).write_text('keep me')
    (root / 'damaged.pth').write_bytes(b'PK\x03\x04 not a whole checkpoint')
    (root / 'a_folder').mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / 'image.png')
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(root / 'small.png')
    generate_demo_dataset(str(root / 'det'), **TINY_DEMO)
    (root / 'tiny.py').write_text(f'_base_ = {str(DEMO_CONFIG)!r}\n' +
                                  tiny_demo_overrides(f'{root / "det"}/'))
    return root


# (tool, arguments, what stderr must show); in the arguments, {d} is the
# folder of the `files` fixture.
CFG = str(DEMO_CONFIG)
BAD_CALLS = [
    # tools/train.py
    ('tools/train.py', [], 'the following arguments are required: config'),
    ('tools/train.py', ['{d}/a_folder'], "'{d}/a_folder' is a folder"),
    ('tools/train.py', [CFG, '--resume', '{d}/missing.pth'],
     "--resume: no such file '{d}/missing.pth'"),
    ('tools/train.py', [CFG, '--work-dir', '{d}/a_file'],
     '--work-dir {d}/a_file is a file, not a folder'),
    ('tools/train.py', [CFG, '--work-dir', '{d}/a_file/run'],
     '--work-dir {d}/a_file/run: {d}/a_file is a file, not a folder'),
    ('tools/train.py', [CFG, '--launcher', 'pytorch'],
     '--launcher pytorch expects the environment of torchrun'),
    ('tools/train.py', [CFG, '--launcher', 'slurm'],
     '--launcher slurm expects the environment of srun'),
    ('tools/train.py', [CFG, '--launcher', 'cloud'],
     "argument --launcher: invalid choice: 'cloud'"),
    ('tools/train.py', ['{d}/tiny.py', '--work-dir', '{d}/work_train',
                        '--cfg-options', 'train_cfg.max_epochs=abc'],
     '--cfg-options train_cfg.max_epochs=abc: the config has int 1'),
    # tools/test.py
    ('tools/test.py', [CFG, '{d}/missing.pth'],
     "checkpoint: no such file '{d}/missing.pth'"),
    ('tools/test.py', [CFG, '{d}/a_folder'],
     "checkpoint: '{d}/a_folder' is a folder, not a checkpoint"),
    ('tools/test.py', [CFG, '{d}/damaged.pth', '--out', '{d}/existing.pkl'],
     '--out {d}/existing.pkl exists; pass --overwrite to replace it'),
    ('tools/test.py', ['{d}/tiny.py', '{d}/damaged.pth', '--work-dir',
                       '{d}/work_test'],
     "Cannot read checkpoint '{d}/damaged.pth'"),
    ('tools/test.py', ['{d}/tiny.py', 'http://127.0.0.1:9/epoch_1.pth',
                       '--work-dir', '{d}/work_url'],
     "cannot download checkpoint 'http://127.0.0.1:9/epoch_1.pth'"),
    # tools/inference.py
    ('tools/inference.py', ['{d}/image.png', '{d}/a_folder', '{d}/damaged.pth'],
     "config '{d}/a_folder' is a folder"),
    ('tools/inference.py', ['{d}/missing.png', CFG, '{d}/damaged.pth'],
     "inputs: no such file or folder '{d}/missing.png'"),
    ('tools/inference.py', ['{d}/image.png', CFG, '{d}/damaged.pth',
                            '--batch-size', '0'],
     "argument --batch-size: expected an integer >= 1, got '0'"),
    ('tools/inference.py', ['{d}/image.png', CFG, '{d}/damaged.pth',
                            '--device', 'gpu'],
     "argument --device: 'gpu' is not a device"),
    pytest.param('tools/inference.py', ['{d}/image.png', CFG,
                                        '{d}/damaged.pth', '--device', 'cuda'],
                 "argument --device: 'cuda': this machine has 0",
                 marks=pytest.mark.skipif(HAS_CUDA, reason='a GPU is here')),
    ('tools/inference.py', ['{d}/image.png', CFG, '{d}/damaged.pth',
                            '--score-thr', '2'], '--score-thr must be in [0, 1]'),
    ('tools/inference.py', ['{d}/image.png', CFG, '{d}/damaged.pth',
                            '--out-dir', '{d}/a_file'],
     '--out-dir {d}/a_file/vis: {d}/a_file is a file'),
    # tools/deployment/export.py
    ('tools/deployment/export.py', [CFG, '{d}/missing.pth'],
     "checkpoint: no such file '{d}/missing.pth'"),
    ('tools/deployment/export.py', [CFG, '{d}/damaged.pth', '--shape', '1',
                                    '3', '0', '64'],
     "argument --shape: expected an integer >= 1, got '0'"),
    ('tools/deployment/export.py', [CFG, '{d}/damaged.pth', '--shape', '1',
                                    '3', '64'],
     'argument --shape: expected 4 arguments'),
    ('tools/deployment/export.py', [CFG, '{d}/damaged.pth', '--out',
                                    '{d}/existing.onnx'],
     '--out {d}/existing.onnx exists; pass --overwrite'),
    ('tools/deployment/export.py', [CFG, '{d}/damaged.pth', '--tolerance',
                                    '-1'], '--tolerance must be positive'),
    ('tools/deployment/export.py', [CFG, '{d}/damaged.pth', '--out',
                                    '{d}/export.onnx'],
     "Cannot read checkpoint '{d}/damaged.pth'"),
    # tools/misc/check_data.py
    ('tools/misc/check_data.py', ['{d}/missing.py'],
     "config file '{d}/missing.py' does not exist"),
    ('tools/misc/check_data.py', [CFG, '--splits', 'tain'],
     "argument --splits: invalid choice: 'tain'"),
    # tools/misc/convert_checkpoint.py
    ('tools/misc/convert_checkpoint.py', ['{d}/missing.pth', '{d}/out.pth',
                                          '--trust'],
     "input: no such file '{d}/missing.pth'"),
    ('tools/misc/convert_checkpoint.py', ['{d}/damaged.pth', '{d}/out.pth'],
     'pass --trust'),
    ('tools/misc/convert_checkpoint.py', ['{d}/damaged.pth', '{d}/out.pth',
                                          '--trust'],
     "input '{d}/damaged.pth': torch.load cannot read it"),
    ('tools/misc/convert_checkpoint.py', ['{d}/damaged.pth',
                                          '{d}/existing.pkl', '--trust'],
     'output {d}/existing.pkl exists; pass --overwrite'),
    # tools/analysis_tools/mcnemar.py
    (ANALYSIS + 'mcnemar.py', ['{d}/missing.pkl', '{d}/existing.pkl'],
     "prediction file '{d}/missing.pkl' does not exist"),
    (ANALYSIS + 'mcnemar.py', ['{d}/existing.pkl', '{d}/existing.pkl'],
     "prediction file '{d}/existing.pkl' is not a pickle"),
    (ANALYSIS + 'mcnemar.py', ['--table', '1', '-2', '3', '4'],
     "argument --table: expected an integer >= 0, got '-2'"),
    (ANALYSIS + 'mcnemar.py', ['--table', '1', '0', '0', '4'],
     'never disagree'),
    (ANALYSIS + 'mcnemar.py', ['{d}/existing.pkl'],
     'give either two prediction files or --table'),
    (ANALYSIS + 'mcnemar.py', ['--table', '1', '2', '3', '4', '--out',
                               '{d}/existing.json'],
     '--out {d}/existing.json exists; pass --overwrite'),
    # tools/analysis_tools/pool_similarity.py
    (ANALYSIS + 'pool_similarity.py', ['--kernels', '1'],
     '--kernels must be >= 2'),
    (ANALYSIS + 'pool_similarity.py', ['--kernels', 'two'],
     "argument --kernels: invalid int value: 'two'"),
    (ANALYSIS + 'pool_similarity.py', ['--images', '{d}/missing.png',
                                       '--out-dir', '{d}/sim1'],
     "image '{d}/missing.png' is neither a file nor"),
    (ANALYSIS + 'pool_similarity.py', ['--img-dir', '{d}/missing',
                                       '--out-dir', '{d}/sim2'],
     "image folder '{d}/missing' is not a directory"),
    (ANALYSIS + 'pool_similarity.py', ['--images', '{d}/small.png',
                                       '--kernels', '5', '--out-dir',
                                       '{d}/sim3'],
     "image '{d}/small.png' of size (12, 12) is too small"),
    (ANALYSIS + 'pool_similarity.py', ['--images', '{d}/image.png',
                                       '--out-dir', '{d}/a_file'],
     '--out-dir {d}/a_file/pool_similarity.csv: {d}/a_file is a file'),
    # tools/analysis_tools/visualize_pooling.py
    (ANALYSIS + 'visualize_pooling.py', ['{d}/missing.png'],
     "image '{d}/missing.png' is neither a file nor"),
    (ANALYSIS + 'visualize_pooling.py', ['{d}/image.png', '--kernel', '0'],
     '--kernel and --stride must be positive'),
    (ANALYSIS + 'visualize_pooling.py', ['{d}/image.png', '--kernel', '64',
                                         '--out', '{d}/big.png'],
     '--kernel 64 64 does not fit in the 40x40 input'),
    (ANALYSIS + 'visualize_pooling.py', ['{d}/image.png', '--zoom', '30', '0',
                                         '20', '20', '--out', '{d}/zoom.png'],
     '--zoom 30 0 20 20 must be a non-empty region'),
    (ANALYSIS + 'visualize_pooling.py', ['{d}/image.png', '--kernel', '2',
                                         '2', '2', '--frames', '0'],
     "argument --frames: expected an integer >= 1, got '0'"),
    (ANALYSIS + 'visualize_pooling.py', ['{d}/image.png', '--out',
                                         '{d}/existing.png'],
     '--out {d}/existing.png exists; pass --overwrite'),
    # tools/analysis_tools/benchmark_pool.py
    (ANALYSIS + 'benchmark_pool.py', ['--shape', '2', '3', '0', '4'],
     "argument --shape: expected an integer >= 1, got '0'"),
    (ANALYSIS + 'benchmark_pool.py', ['--shape', '2', '3', '4'],
     '--shape takes 4 (N C H W) or 5 (N C D H W) sizes'),
    (ANALYSIS + 'benchmark_pool.py', ['--cases', '2,2'],
     "argument --cases: expected kernel,stride,padding"),
    (ANALYSIS + 'benchmark_pool.py', ['--cases', '3,1,2'],
     "argument --cases: expected kernel,stride,padding"),
    (ANALYSIS + 'benchmark_pool.py', ['--shape', '1', '1', '3', '3',
                                      '--cases', '6,1,1'],
     '--cases 6,1,1: the kernel does not fit'),
    (ANALYSIS + 'benchmark_pool.py', ['--repeats', '0'],
     "argument --repeats: expected an integer >= 1, got '0'"),
    (ANALYSIS + 'benchmark_pool.py', ['--json', '{d}/existing.json'],
     '--json {d}/existing.json exists; pass --overwrite'),
    # tools/analysis_tools/benchmark_image_checks.py, exp_error.py
    (ANALYSIS + 'benchmark_image_checks.py', ['--images', '0'],
     "argument --images: expected an integer >= 1, got '0'"),
    (ANALYSIS + 'benchmark_image_checks.py', ['--images', '-1'],
     "argument --images: expected an integer >= 1, got '-1'"),
    (ANALYSIS + 'exp_error.py', ['--range', '5'],
     'unrecognized arguments: --range 5'),
    # tools/demo.py, tools/demo_video.py
    ('tools/demo.py', ['--num-train', '0'],
     "argument --num-train: expected an integer >= 1, got '0'"),
    ('tools/demo.py', ['--work-dir', '{d}/a_file'],
     '--work-dir {d}/a_file is a file'),
    pytest.param('tools/demo_video.py', ['--num-val-per-class', '-1'],
                 "argument --num-val-per-class: expected an integer >= 1",
                 marks=pytest.mark.skipif(not HAS_MMACTION,
                                          reason='needs MMAction2')),
]


# Each call runs in its own process, as `python tools/X.py ARGS` in `cwd`,
# but forked from one interpreter that has imported the package already:
# the import (torch, MMEngine, mmdet: 7 s) is paid once, not for each of the
# calls. The child runs the tool as __main__ with the tool's folder first on
# sys.path, stdout to /dev/null and stderr to a file; its exit status is the
# tool's.
ZYGOTE = r"""
import json, os, runpy, sys, traceback
import mmsoftpool.tools.launch  # what every tool imports
for line in sys.stdin:
    tool, args, cwd, env, stderr = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(cwd)
            os.environ.update(env)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT), 2)
            sys.argv = [tool, *args]
            sys.path.insert(0, os.path.dirname(tool))
            runpy.run_path(tool, run_name='__main__')
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (
                stop.code is not None)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""


@pytest.fixture(scope='module')
def zygote():
    env = dict(os.environ, OMP_NUM_THREADS='1',
               # not the tools' output: the pinned MMEngine imports
               # pkg_resources, which newer setuptools warn about
               PYTHONWARNINGS='ignore:pkg_resources is deprecated:UserWarning')
    for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT',
                 'SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'):
        env.pop(name, None)  # no launcher's environment
    process = subprocess.Popen([sys.executable, '-c', ZYGOTE], env=env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    yield process
    process.stdin.close()
    process.wait(timeout=60)


def run_tool(zygote, tool, args, cwd, env=None):
    """(exit code, stderr) of ``python tool *args`` run in ``cwd``."""
    with tempfile.NamedTemporaryFile('r') as stderr:
        zygote.stdin.write(json.dumps([str(REPO / tool), args, str(cwd),
                                       env or {}, stderr.name]) + '\n')
        zygote.stdin.flush()
        code = int(zygote.stdout.readline())
        return code, stderr.read()


@pytest.mark.parametrize('tool,args,shown', BAD_CALLS)
def test_bad_call_is_one_line_and_exit_code_2(zygote, files, tool, args,
                                              shown):
    args = [arg.format(d=files) for arg in args]
    code, stderr = run_tool(zygote, tool, args, files,
                            dict(TORCH_HOME=str(files / 'torch_home')))
    lines = stderr.strip().splitlines()
    assert code == 2, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(f'{Path(tool).name}: error: '), lines
    assert shown.format(d=files) in lines[0]


def test_existing_outputs_are_replaced_only_with_overwrite(zygote, tmp_path):
    """convert_checkpoint.py OUT and mcnemar.py --out: refused, the file
    kept; then replaced with --overwrite."""
    from mmsoftpool.checkpoint import load
    source = tmp_path / 'old.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': {'x': object}},
               source)
    cases = [
        ('tools/misc/convert_checkpoint.py', [str(source), 'out.pth',
                                              '--trust'], 'output out.pth',
         lambda: load(str(tmp_path / 'out.pth'))['meta'] == {
             'x': "<class 'object'>"}),
        (ANALYSIS + 'mcnemar.py', ['--table', '5', '3', '1', '2', '--out',
                                   'out.json'], '--out out.json',
         lambda: json.loads((tmp_path / 'out.json').read_text())['table'] ==
         [[5, 3], [1, 2]]),
    ]
    for tool, args, option, replaced in cases:
        out = tmp_path / option.split()[1]
        out.write_text('earlier result')
        code, stderr = run_tool(zygote, tool, args, tmp_path)
        assert (code, stderr) == (2, f'{Path(tool).name}: error: {option} '
                                  'exists; pass --overwrite to replace it\n')
        assert out.read_text() == 'earlier result'
        code, stderr = run_tool(zygote, tool, args + ['--overwrite'], tmp_path)
        assert code == 0, stderr[-3000:]
        assert replaced()


def test_only_a_failure_an_option_caused_is_blamed_on_it(tmp_path, capsys,
                                                         monkeypatch):
    """run_tool names a --cfg-options value when the failure shows it was
    the cause; any other failure keeps its traceback (a bug)."""
    from mmsoftpool.tools import launch
    monkeypatch.setattr(launch, '_cfg_options', {})  # this test's run only
    config = tmp_path / 'config.py'
    config.write_text('train_cfg = dict(max_epochs=12)\n')
    launch.load_config(str(config), {'train_cfg.max_epochs': 'abc'},
                       str(tmp_path), 'none')

    def bug():
        raise ValueError('index 3 is out of bounds')

    with pytest.raises(ValueError, match='index 3'):
        launch.run_tool(bug)
    with pytest.raises(SystemExit) as stop:
        launch.run_tool(lambda: int('abc'))
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(
        ": error: --cfg-options train_cfg.max_epochs=abc: the config has int "
        "12 there (ValueError: invalid literal for int() with base 10: "
        "'abc')\n")
