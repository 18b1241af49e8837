"""pytest configuration shared by the tests.

A test that takes a ``device`` argument runs on every device: CPU always,
CUDA as a case that is skipped, and shown as such, where no GPU is present.
"""
import pytest
import torch

DEVICES = [
    'cpu',
    pytest.param(
        'cuda',
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(), reason='no CUDA device')),
]


def pytest_generate_tests(metafunc):
    if 'device' in metafunc.fixturenames:
        metafunc.parametrize('device', DEVICES)
