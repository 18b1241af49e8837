"""The tree stays as the linters leave it: ruff over every tracked Python
file (pyproject.toml's [tool.ruff]) and clang-format over the C++ and CUDA
sources (.clang-format), the checks .pre-commit-config.yaml runs on commit.
The versions are the ones requirements/stack.txt pins."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CPP = ('*.h', '*.cpp', '*.cu', '*.cuh')


def tracked(*patterns):
    listed = subprocess.run(['git', 'ls-files', '--', *patterns], cwd=REPO,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f'not a git checkout: {listed.stderr.strip()}')
    return listed.stdout.split()


def test_python_files_pass_ruff():
    files = tracked('*.py')
    assert 'setup.py' in files
    result = subprocess.run([str(BIN / 'ruff'), 'check', '--no-cache', *files],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_cpp_sources_are_clang_formatted():
    files = tracked(*(f'csrc/{pattern}' for pattern in CPP))  # git's * spans folders
    assert 'csrc/window.h' in files and 'csrc/cuda/soft_pool_cuda.cu' in files
    result = subprocess.run([str(BIN / 'clang-format'), '--dry-run', '-Werror', *files],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
