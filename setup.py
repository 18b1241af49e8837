"""Builds mmsoftpool and its compiled operator library mmsoftpool._C.

CPU kernels always; CUDA kernels too when CUDA is available or FORCE_CUDA=1
(nvcc and CUDA_HOME needed, no GPU). Build against the torch that will import
it: ``pip install --no-build-isolation -e .``.
"""
import os
import platform
import shutil
import sys
from pathlib import Path

from setuptools import find_packages, setup
from torch.utils.cpp_extension import (BuildExtension, CppExtension,
                                       CUDAExtension)

ROOT = Path(__file__).resolve().parent


def read_version():
    namespace = {}
    exec((ROOT / 'mmsoftpool' / 'version.py').read_text(), namespace)
    return namespace['__version__']


def make_extension():
    import torch
    sources = [
        'csrc/soft_pool.cpp', 'csrc/cpu/soft_pool_cpu.cpp',
        'csrc/cpu/soft_pool_cpu_vec.cpp'
    ]
    # No -ffast-math: the kernels rely on IEEE infinities and NaNs.
    cxx_flags, link_flags = ['-O3'], []
    if torch.backends.openmp.is_available():
        # at::parallel_for is an inline `#pragma omp parallel`: without OpenMP
        # the kernels would run on one thread (libgomp resolves to torch's).
        cxx_flags.append('-fopenmp')
        link_flags.append('-fopenmp')
    if platform.machine() in ('x86_64', 'AMD64') and not os.getenv(
            'MMSOFTPOOL_NO_AVX2'):
        # ATen's at::vec picks its AVX2 implementation (Sleef exp/log from
        # libtorch) from these macros; the build then needs an x86-64-v3 CPU.
        cxx_flags += [
            '-mavx2', '-mfma', '-mf16c', '-DCPU_CAPABILITY=AVX2', '-DCPU_CAPABILITY_AVX2'
        ]
    if torch.cuda.is_available() or os.getenv('FORCE_CUDA', '0') == '1':
        sources.append('csrc/cuda/soft_pool_cuda.cu')
        return CUDAExtension(
            'mmsoftpool._C',
            sources,
            extra_compile_args=dict(cxx=cxx_flags, nvcc=['-O3']),
            extra_link_args=link_flags)
    return CppExtension(
        'mmsoftpool._C',
        sources,
        extra_compile_args=dict(cxx=cxx_flags),
        extra_link_args=link_flags)


def ship_configs():
    """Put configs/ and model-index.yml in the package under mmsoftpool/.mim/
    (as mmdet does), so that ``_base_ = 'mmsoftpool::retinanet/...'``
    resolves from any project: MMEngine reads ``.mim/model-index.yml``, then
    ``.mim/configs/<path>``.

    Symlinks for editable installs, copies when building a wheel or sdist.
    """
    mim = ROOT / 'mmsoftpool' / '.mim'
    mim.mkdir(exist_ok=True)
    copy = any(cmd in sys.argv for cmd in ('bdist_wheel', 'sdist'))
    for name in ('configs', 'model-index.yml'):
        source, target = ROOT / name, mim / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        if not copy:
            target.symlink_to(Path('..', '..', name))
        elif source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
    return ['.mim/model-index.yml'] + [
        str(Path('.mim', 'configs', path.relative_to(ROOT / 'configs')))
        for path in (ROOT / 'configs').rglob('*')
        if path.suffix in ('.py', '.yml')
    ]


setup(
    name='mmsoftpool',
    version=read_version(),
    description='SoftPool (ICCV 2021) for MMEngine, MMDetection and MMPretrain',
    long_description=(ROOT / 'README.md').read_text()
    if (ROOT / 'README.md').exists() else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['mmsoftpool', 'mmsoftpool.*']),
    package_data={'mmsoftpool': ship_configs()},
    install_requires=['torch>=2.4', 'mmengine>=0.10', 'mmcv>=2.0,<2.2', 'mmdet>=3.0'],
    extras_require={
        'cls': ['mmpretrain>=1.0'],
        'tests': ['pytest', 'scikit-image', 'statsmodels'],
    },
    ext_modules=[make_extension()],
    cmdclass={'build_ext': BuildExtension},
    zip_safe=False,
)
