"""Builds mmsoftpool and its compiled operator library mmsoftpool._C.

CPU kernels always; CUDA kernels too when CUDA is available or FORCE_CUDA=1
(nvcc and CUDA_HOME needed, no GPU). Build against the torch that will import
it: ``pip install --no-build-isolation -e .``.
"""
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

ROOT = Path(__file__).resolve().parent


def read_version():
    namespace = {}
    exec((ROOT / 'mmsoftpool' / 'version.py').read_text(), namespace)
    return namespace['__version__']


# The vectorised kernels: compiled once per CPU capability by
# BuildWithCpuCapabilities, the rest of the library once, for the baseline ISA.
VECTOR_SOURCES = [
    'csrc/cpu/rows.cpp', 'csrc/cpu/channels_last.cpp', 'csrc/cpu/vec_functions.cpp'
]


def cpu_capabilities():
    """(name, compiler flags) of each CPU capability the vectorised kernels
    are built for: ATen's own set and flags (its cmake/Codegen.cmake). The
    build for the capability ATen picks at run time runs (soft_pool_cpu.cpp)."""
    capabilities = [('DEFAULT', [])]
    if platform.machine() in ('x86_64', 'AMD64'):
        capabilities += [('AVX2', ['-mavx2', '-mfma', '-mf16c']),
                         ('AVX512', ['-mavx512f', '-mavx512bw', '-mavx512vl',
                                     '-mavx512dq', '-mfma'])]
    return capabilities


def make_extension():
    import torch
    # csrc/cpu/cuda_path.cpp: the CUDA path run on the CPU (test ops), in every build.
    sources = ['csrc/soft_pool.cpp', 'csrc/cpu/soft_pool_cpu.cpp', 'csrc/cpu/cuda_path.cpp']
    # No -ffast-math: the kernels rely on IEEE infinities and NaNs.
    cxx_flags, link_flags = ['-O3'], []
    if torch.backends.openmp.is_available():
        # at::parallel_for is an inline `#pragma omp parallel`: without OpenMP
        # the kernels would run on one thread (libgomp resolves to torch's).
        cxx_flags.append('-fopenmp')
        link_flags.append('-fopenmp')
    if len(cpu_capabilities()) > 1:
        cxx_flags.append('-DMMSOFTPOOL_X86_CAPABILITIES')
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


class BuildWithCpuCapabilities(BuildExtension):
    """Compiles VECTOR_SOURCES once per CPU capability, with that capability's
    flags and CPU_CAPABILITY macros (at::vec's implementation and the kernels'
    namespace), into objects linked after the baseline ones, so that inline
    functions the two share resolve to the baseline copy."""

    def build_extension(self, ext):
        cxx = ext.extra_compile_args['cxx']
        ext.extra_objects = []
        for name, flags in cpu_capabilities():
            ext.extra_objects += self.compiler.compile(
                VECTOR_SOURCES,
                output_dir=os.path.join(self.build_temp, name.lower()),
                include_dirs=ext.include_dirs,
                extra_postargs=dict(
                    cxx=cxx + [f'-DCPU_CAPABILITY={name}', f'-DCPU_CAPABILITY_{name}'] + flags,
                    nvcc=[]),
                depends=ext.depends)
        super().build_extension(ext)


# configs/, model-index.yml and tools/ go in the package under
# mmsoftpool/.mim/ (as mmdet ships them), so that `_base_ =
# 'mmsoftpool::retinanet/...'` resolves from any project (MMEngine reads
# .mim/model-index.yml, then .mim/configs/<path>) and `mim train mmsoftpool`
# finds .mim/tools/train.py.
SHIPPED = ('configs', 'model-index.yml', 'tools')


def link_configs_for_editable_installs():
    """mmsoftpool/.mim/{configs,model-index.yml,tools} as symlinks into the
    checkout, so an editable install sees configs as they are edited. A wheel
    gets copies from build_py below; the checkout is not changed."""
    mim = ROOT / 'mmsoftpool' / '.mim'
    if not (ROOT / 'configs').is_dir():  # an sdist being built: nothing to do
        return
    mim.mkdir(exist_ok=True)
    for name in SHIPPED:
        target = mim / name
        if not target.is_symlink():
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            target.symlink_to(Path('..', '..', name))


class BuildPyWithConfigs(build_py):
    """Copies configs/, model-index.yml and tools/ into the built package."""

    def run(self):
        super().run()
        mim = Path(self.build_lib) / 'mmsoftpool' / '.mim'
        for name in SHIPPED:
            source, target = ROOT / name, mim / name
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target,
                                ignore=shutil.ignore_patterns('__pycache__'))
            else:
                shutil.copyfile(source, target)


def building_a_distribution():
    return any(cmd in sys.argv for cmd in ('bdist_wheel', 'sdist'))


if not building_a_distribution():
    link_configs_for_editable_installs()
# A wheel is built in a temporary folder, so `pip wheel .` leaves no build/
# in the checkout.
BUILD_OPTIONS = dict(build=dict(build_base=tempfile.mkdtemp(
    prefix='mmsoftpool-build-'))) if building_a_distribution() else {}


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
    install_requires=['torch>=2.4', 'mmengine>=0.10', 'mmcv>=2.0,<2.2', 'mmdet>=3.0'],
    extras_require={
        'cls': ['mmpretrain>=1.0'],
        # ONNX export, onnx.checker and ONNX Runtime (tools/deployment/export.py);
        # the versions verified together are pinned in requirements/stack.txt
        'deploy': ['onnx>=1.23', 'onnxscript>=0.7', 'onnxruntime>=1.31'],
        # What MMAction2's rawframe recognizers and the video demo use. MMAction2
        # itself comes from tools/install_mmaction2.sh (its 1.2.0 wheel cannot
        # import mmaction.models, and its own requirements replace mmcv's cv2).
        'video': ['einops', 'matplotlib', 'scipy'],
        'tests': ['pytest', 'scikit-image', 'statsmodels'],
    },
    ext_modules=[make_extension()],
    entry_points={
        'console_scripts': [
            'mmsoftpool-train=mmsoftpool.tools.train:cli',
            'mmsoftpool-test=mmsoftpool.tools.test:cli',
        ]
    },
    cmdclass={'build_ext': BuildWithCpuCapabilities, 'build_py': BuildPyWithConfigs},
    options=BUILD_OPTIONS,
    zip_safe=False,
)
