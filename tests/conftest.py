"""pytest configuration shared by the tests.

A test that takes a ``device`` argument runs on every device: CPU always,
CUDA as a case marked ``cuda`` that is skipped, and shown as such, where no
GPU is present. Tests marked ``slow`` (trainings, wheel builds, reruns) are
left out by ``make test-fast`` (``pytest -m "not slow"``).
"""
import pytest
import torch

DEVICES = [
    'cpu',
    pytest.param(
        'cuda',
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device'),
        ]),
]


def pytest_generate_tests(metafunc):
    if 'device' in metafunc.fixturenames:
        metafunc.parametrize('device', DEVICES)
