"""The op needs torch alone: ``import mmsoftpool.ops`` (and ``mmsoftpool``)
in a virtual environment that holds only torch, its own dependencies and this
package, as in a plain PyTorch (timm, torchvision) project."""
import importlib.metadata as metadata
import os
import os.path as osp
import re
import subprocess
import sys
import sysconfig

from packaging.requirements import Requirement

import mmsoftpool

SITE_PACKAGES = sysconfig.get_paths()['purelib']


def distribution_closure(name):
    """``name`` and the distributions it requires, recursively, for this
    interpreter (markers evaluated, no extras)."""
    seen, todo = {}, [name]
    while todo:
        dist = metadata.distribution(todo.pop())
        key = re.sub(r'[-_.]+', '-', dist.metadata['Name']).lower()
        if key in seen:
            continue
        seen[key] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({'extra': ''}):
                todo.append(req.name)
    return list(seen.values())


def top_level_names(dist):
    """What a distribution puts at the top of site-packages (its packages,
    modules, bundled libraries and its .dist-info)."""
    return {file.parts[0] for file in dist.files or []
            if file.parts[0] not in ('..', '__pycache__')}


def make_torch_only_venv(root):
    """A venv whose site-packages sees, through one .pth file, a folder with
    links to torch's closure and to this package: nothing else."""
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', root], check=True)
    shelf = osp.join(root, 'shelf')
    os.makedirs(shelf)
    for dist in distribution_closure('torch'):
        for name in top_level_names(dist):
            source = osp.join(SITE_PACKAGES, name)
            if osp.exists(source) and not osp.exists(osp.join(shelf, name)):
                os.symlink(source, osp.join(shelf, name))
    os.symlink(osp.dirname(mmsoftpool.__file__), osp.join(shelf, 'mmsoftpool'))
    python = osp.join(root, 'bin', 'python')
    venv_site = subprocess.run(
        [python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
        capture_output=True, text=True, check=True).stdout.strip()
    assert venv_site != SITE_PACKAGES
    with open(osp.join(venv_site, 'torch_only.pth'), 'w') as f:
        f.write(shelf + '\n')
    return python


USE = '''
import sys
import torch
from torch import nn
import mmsoftpool.ops as ops
import mmsoftpool

net = nn.Sequential(nn.Conv2d(3, 4, 3), ops.SoftPool2d(2), nn.Flatten(), nn.LazyLinear(2))
x = torch.randn(2, 3, 10, 10, requires_grad=True)
net(x).sum().backward()
assert x.grad is not None and torch.isfinite(x.grad).all()
torch.testing.assert_close(mmsoftpool.soft_pool2d(x, 3, 2, 1), ops.soft_pool2d(x, 3, 2, 1))
loaded = sorted(m for m in sys.modules if m.split('.')[0] in (
    'mmengine', 'mmcv', 'mmdet', 'mmpretrain', 'numpy', 'cv2'))
print('loaded:', loaded)
'''


def test_op_imports_and_runs_with_torch_alone(tmp_path):
    python = make_torch_only_venv(str(tmp_path / 'venv'))
    env = {'PATH': os.environ['PATH'], 'HOME': str(tmp_path)}
    absent = subprocess.run([python, '-c', 'import mmengine'], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert absent.returncode != 0 and 'mmengine' in absent.stderr  # really torch alone
    result = subprocess.run([python, '-c', USE], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'loaded: []' in result.stdout
