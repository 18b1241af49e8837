"""tools/analysis_tools/benchmark_onnx.py runs as a user runs it, from their
own folder: the ratios to ONNX Runtime's own operators and to the max-pool
twin, which formula the exported graph took, the profile."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # times ONNX Runtime sessions

SCRIPT = Path(__file__).resolve().parents[1] / 'tools' / 'analysis_tools' / 'benchmark_onnx.py'


def run(tmp_path, *args):
    out = tmp_path / 'bench.json'
    result = subprocess.run(
        [sys.executable, str(SCRIPT), '--backend', 'onnxruntime', '--repeats', '2', '--warmup',
         '1', '--threads', '1', '--json', str(out), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, json.loads(out.read_text())


def test_layers_against_exp_and_max_pool(tmp_path):
    stdout, result = run(tmp_path, '--layers', '--shape', '1x8x12x10', '2x8x9x9', '--cases',
                         '2,2,0', '3,2,1', '--profile')
    assert 'intra_op_num_threads=1' in result['setup']
    rows = result['rows']
    assert [(r['what'], r['shape']) for r in rows] == [
        ('SoftPool2d(2, 2, 0)', '1x8x12x10'), ('SoftPool2d(3, 2, 1)', '1x8x12x10'),
        ('SoftPool2d(2, 2, 0)', '2x8x9x9'), ('SoftPool2d(3, 2, 1)', '2x8x9x9')]
    for row in rows:
        assert row['formula'] == 'paper'
        assert row['softpool_per_exp'] == pytest.approx(row['softpool_ms'] / row['exp_ms'])
        assert row['softpool_per_max_pool'] == pytest.approx(row['softpool_ms'] /
                                                             row['max_pool_ms'])
        assert {'Exp', 'AveragePool', 'If'} <= set(row['profile_us'])
        # the floor (Exp, Mul, two AveragePools) on the same tensor, in the same turns
        assert row['floor_per_exp'] == pytest.approx(row['floor_ms'] / row['exp_ms'])
        assert row['softpool_per_floor'] == pytest.approx(row['softpool_ms'] / row['floor_ms'])
    assert stdout.count('[onnxruntime] SoftPool2d') == 4


def test_1d_and_3d_layers(tmp_path):
    _, result = run(tmp_path, '--layers', '--shape', '1x8x4x9x8', '--cases', '2,2,0',
                    '1x3x3,1x2x2,0x1x1')
    assert [r['what'] for r in result['rows']] == ['SoftPool3d(2, 2, 0)',
                                                   'SoftPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))']
    assert not any('floor_ms' in r for r in result['rows'])  # a 2-D graph's floor only
    _, result = run(tmp_path, '--layers', '--shape', '2x8x30', '--cases', '3,2,1')
    assert [(r['what'], r['formula']) for r in result['rows']] == [('SoftPool1d(3, 2, 1)',
                                                                    'paper')]
    # 1x3x3 has no 1-D meaning: refused before anything runs
    result = subprocess.run([sys.executable, str(SCRIPT), '--shape', '2x8x30', '--cases',
                             '1x3x3,1x2x2,0x1x1'], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert '--cases 1x3x3,1x2x2,0x1x1: one value or 1 per dim expected' in result.stderr


def test_layers_with_an_offset_take_the_exact_formula(tmp_path):
    _, result = run(tmp_path, '--layers', '--shape', '1x8x12x10', '--cases', '3,2,1',
                    '--offset', '1000')
    assert [r['formula'] for r in result['rows']] == ['exact']


def test_classifier_against_its_max_pool_twin(tmp_path):
    _, result = run(tmp_path, '--models', '--model', 'SoftPoolResNet-18')
    (row, ) = result['rows']
    assert (row['what'], row['shape'], row['formula']) == ('SoftPoolResNet-18', '1x3x224x224',
                                                           'paper')
    assert row['softpool_per_max_pool'] == pytest.approx(row['softpool_ms'] /
                                                         row['max_pool_ms'])


@pytest.mark.parametrize('args,message', [
    (['--shape', '1x8'], 'argument --shape: NxCxL, NxCxHxW or NxCxDxHxW with positive sizes'),
    (['--shape', '1x0x8x8'], 'argument --shape: NxCxL, NxCxHxW or NxCxDxHxW with positive'),
    (['--cases', '2,2'], 'argument --cases: kernel,stride,padding expected'),
    (['--cases', '3,2,2'], '--cases 3,2,2: the padding must be at most half the kernel'),
    (['--repeats', '0'], 'argument --repeats: an integer >= 1 expected'),
])
def test_refuses_bad_arguments_in_one_line(tmp_path, args, message):
    result = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
