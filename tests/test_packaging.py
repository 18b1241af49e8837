"""The package as users get it: sdist -> wheel -> a fresh virtual
environment, then the ecosystem's entry points from a folder outside the
repository (about 3 minutes: the wheel, built once, compiles the operator library).

The fresh environment is layered on the project's stack with a ``.pth`` line
(../shared/notes/testing-as-users.md): the wheel shadows the editable
install, and nothing of the checkout is importable from the user's folder.
"""
import os
import os.path as osp
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

from helpers import TINY_DEMO, tiny_demo_overrides
from mmsoftpool.datasets.demo import generate_demo_dataset

pytestmark = pytest.mark.slow  # builds and installs the wheel, trains

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 900


def run(args, cwd, env=None, check=True):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=TIMEOUT)
    if check:
        assert result.returncode == 0, (
            f'{args}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}')
    return result


def checkout_state():
    """What building must not change: git's view, no build/, the editable
    install's .mim symlinks."""
    mim = REPO / 'mmsoftpool' / '.mim'
    return (run(['git', 'status', '--porcelain'], REPO).stdout,
            (REPO / 'build').exists(),
            sorted(p.name for p in mim.iterdir() if p.is_symlink()))


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """The wheel built from the sdist, installed in a fresh venv: its python
    and a user folder with a tiny generated dataset."""
    tmp = tmp_path_factory.mktemp('package')
    before = checkout_state()
    run([sys.executable, 'setup.py', '-q', 'sdist', '-d', str(tmp / 'sdist')],
        REPO)
    [sdist] = (tmp / 'sdist').iterdir()
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
        archive.extractall(tmp / 'src', filter='data')
    root = f'mmsoftpool-{sdist.name[len("mmsoftpool-"):-len(".tar.gz")]}'
    for needed in ('csrc/window.h', 'csrc/cuda/soft_pool_cuda.cu', 'csrc/cuda/soft_pool_cuda.h',
                   'configs/demo/retinanet_r18_softpool_demo.py',
                   'model-index.yml', 'requirements/stack.txt', 'LICENSE',
                   'tools/train.py'):
        assert f'{root}/{needed}' in names, needed
    env = dict(os.environ, MAX_JOBS='2')
    run([sys.executable, '-m', 'pip', 'wheel', '--no-build-isolation',
         '--no-deps', '--disable-pip-version-check', '-w', str(tmp / 'dist'),
         '.'], tmp / 'src' / root, env)
    [wheel] = (tmp / 'dist').glob('*.whl')
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert 'mmsoftpool/.mim/configs/demo/retinanet_r18_softpool_demo.py' in names
    assert 'mmsoftpool/.mim/tools/train.py' in names
    assert any(n.startswith('mmsoftpool/_C') for n in names)
    # pip on the checkout leaves it as it was: what it runs there (setup.py
    # for the metadata; the compile goes to a temporary build_base, as the
    # wheel above was built) without compiling a second time
    run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-index',
         '--no-build-isolation', '--no-deps', '--disable-pip-version-check',
         '.'], REPO, env)
    assert checkout_state() == before

    environment = tmp / 'venv'
    venv.create(environment, with_pip=True)
    site = next((environment / 'lib').glob('python3*/site-packages'))
    stack = next(p for p in map(Path, sys.path)
                 if p.name == 'site-packages' and (p / 'mmdet').is_dir())
    (site / 'stack.pth').write_text(f'{stack}\n')
    python = str(environment / 'bin' / 'python')
    run([python, '-m', 'pip', 'install', '--no-deps', '--no-index',
         '--disable-pip-version-check', str(wheel)], tmp)

    user = tmp / 'project'
    generate_demo_dataset(str(user / 'data'), **TINY_DEMO)
    located = run([python, '-c', 'import mmsoftpool; print(mmsoftpool.__file__)'],
                  user).stdout.strip()
    assert located.startswith(str(site)), located
    return python, user, Path(located).parent


TINY = tiny_demo_overrides('data/')


def user_env():
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('PYTHONPATH', None)
    return env


def test_package_entry_point_with_a_packaged_base(installed):
    """``python -m mmsoftpool.tools.train`` (what ``mim train mmsoftpool``
    runs too) on a config inheriting ``mmsoftpool::demo/...``."""
    python, user, _ = installed
    (user / 'mine.py').write_text(
        "_base_ = 'mmsoftpool::demo/retinanet_r18_softpool_demo.py'\n" +
        TINY)
    log = run([python, '-m', 'mmsoftpool.tools.train', 'mine.py',
               '--work-dir', 'work_mine'], user, user_env())
    assert 'coco/bbox_mAP:' in log.stdout + log.stderr


def test_mmdet_tools_with_a_base_by_path_then_test_and_inference(installed):
    """mmdet's own tools/train.py on a config that inherits the installed
    demo config by file path and imports the plugin; then the package's test
    and inference tools on the checkpoint it wrote."""
    python, user, package = installed
    mmdet_tools = run([python, '-c', 'import mmdet, os; print(os.path.join('
                       'os.path.dirname(mmdet.__file__), ".mim", "tools"))'],
                      user).stdout.strip()
    base = package / '.mim' / 'configs' / 'demo' / 'retinanet_r18_softpool_demo.py'
    (user / 'by_path.py').write_text(
        f'_base_ = {str(base)!r}\n'
        "custom_imports = dict(imports=['mmsoftpool'], "
        'allow_failed_imports=False)\n' + TINY)
    run([python, osp.join(mmdet_tools, 'train.py'), 'by_path.py',
         '--work-dir', 'work_path'], user, user_env())
    checkpoint = (user / 'work_path' / 'last_checkpoint').read_text().strip()
    tools = package / '.mim' / 'tools'
    log = run([python, str(tools / 'test.py'), 'by_path.py', checkpoint,
               '--work-dir', 'work_test'], user, user_env())
    assert 'coco/bbox_mAP:' in log.stdout + log.stderr
    image = sorted((user / 'data' / 'val').iterdir())[0]
    log = run([python, str(tools / 'inference.py'), str(image), 'by_path.py',
               checkpoint, '--out-dir', 'painted', '--score-thr', '0'], user,
              user_env())
    assert (user / 'painted' / 'vis' / image.name).is_file(), log.stdout


def test_video_demo_from_the_wheel_with_mmaction_tools(installed):
    """The wheel's video demo config: inherited as ``mmsoftpool::video/...``
    by the project's entry point, and by file path (plus custom_imports) by
    MMAction2's own tools/train.py; a few generated clips, one epoch."""
    pytest.importorskip('mmaction')
    python, user, package = installed
    small = 'dict(dataset=dict(num_train_per_class=2, num_val_per_class=1))'
    rest = ('train_cfg = dict(max_epochs=1, val_interval=1)\n'
            f'train_dataloader = {small}\nval_dataloader = {small}\n'
            f'test_dataloader = {small}\n')
    (user / 'video_scoped.py').write_text(
        "_base_ = 'mmsoftpool::video/demo/r3d18_softpool_demo.py'\n" + rest)
    log = run([python, '-m', 'mmsoftpool.tools.train', 'video_scoped.py',
               '--work-dir', 'work_video_scoped'], user, user_env())
    assert 'acc/top1:' in log.stdout + log.stderr
    base = package / '.mim' / 'configs' / 'video' / 'demo' / \
        'r3d18_softpool_demo.py'
    (user / 'video_path.py').write_text(
        f'_base_ = {str(base)!r}\n'
        "custom_imports = dict(imports=['mmsoftpool'], "
        'allow_failed_imports=False)\n' + rest)
    tools = run([python, '-c', 'import mmaction, os; print(os.path.join('
                 'os.path.dirname(mmaction.__file__), ".mim", "tools"))'],
                user).stdout.strip()
    log = run([python, os.path.join(tools, 'train.py'), 'video_path.py',
               '--work-dir', 'work_video_path'], user, user_env())
    assert 'acc/top1:' in log.stdout + log.stderr
    assert (user / 'work_video_path' / 'epoch_1.pth').is_file()
