"""tools/analysis_tools/benchmark_pool.py runs as a user runs it: 2-D and 3-D,
floors and memory in its JSON."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # times the op in subprocesses

SCRIPT = Path(__file__).resolve().parents[1] / 'tools' / 'analysis_tools' / 'benchmark_pool.py'


@pytest.mark.parametrize('shape', [['2', '3', '12', '10'], ['1', '2', '6', '8', '8']])
def test_benchmark_writes_floors_ratios_and_memory(shape, tmp_path):
    out = tmp_path / 'bench.json'
    subprocess.run([sys.executable, str(SCRIPT), '--shape', *shape, '--cases', '2,2,0', '3,2,1',
                    '--memory-format', 'contiguous', 'channels_last', '--repeats', '1',
                    '--warmup', '1', '--threads', '1', '--no-compile', '--json', str(out)],
                   check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    dims = len(shape) - 2
    assert 'SoftPool kernels' in result['setup']
    rows = result['rows']
    assert len(rows) == 2 * 2 * 4
    assert {r['method'] for r in rows} == {
        f'soft_pool{dims}d', f'max_pool{dims}d', f'avg_pool{dims}d', 'pytorch_formula'}
    for row in rows:
        for key in ('t_exp_ms', 't_copy_ms', 't_fresh_ms', 't_fair_fwd_ms', 't_fair_fb_ms',
                    'forward_ms', 'forward_backward_ms', 'forward_peak_mb',
                    'forward_temporary_mb', 'forward_backward_peak_mb'):
            assert row[key] >= 0, key
        assert row['forward_exp_ratio'] == pytest.approx(row['forward_ms'] / row['t_exp_ms'])
        assert row['forward_backward_copy_ratio'] == pytest.approx(
            row['forward_backward_ms'] / row['t_copy_ms'])
        assert row['forward_fair_ratio'] == pytest.approx(row['forward_ms'] / row['t_fair_fwd_ms'])
        assert row['forward_backward_fair_ratio'] == pytest.approx(
            row['forward_backward_ms'] / row['t_fair_fb_ms'])
        assert 'forward_float32_ratio' not in row  # one dtype: nothing to compare with
    for row in rows:  # ratios to the native pools of the same case and layout
        same = {r['method']: r for r in rows if (r['memory_format'], r['kernel']) ==
                (row['memory_format'], row['kernel'])}
        assert row['forward_ratio'] == pytest.approx(
            row['forward_ms'] / same[f'max_pool{dims}d']['forward_ms'])
        assert row['forward_backward_avg_ratio'] == pytest.approx(
            row['forward_backward_ms'] / same[f'avg_pool{dims}d']['forward_backward_ms'])


def test_benchmark_times_with_a_warm_heap(tmp_path):
    """--heap warm runs the timings again with glibc's thresholds set, and
    says so; the memory pass still sees freed blocks go back to the system."""
    out = tmp_path / 'bench.json'
    subprocess.run([sys.executable, str(SCRIPT), '--shape', '2', '3', '12', '10', '--cases',
                    '2,2,0', '--repeats', '1', '--warmup', '1', '--heap', 'warm', '--json',
                    str(out)], check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    assert 'warm heap' in result['setup']
    assert result['args']['heap'] == 'warm'
    assert all(row['forward_backward_peak_mb'] >= 0 for row in result['rows'])


def test_benchmark_refuses_a_shape_of_the_wrong_rank():
    result = subprocess.run([sys.executable, str(SCRIPT), '--shape', '2', '3', '4'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert '--shape takes 4 (N C H W) or 5 (N C D H W) sizes' in result.stderr


def test_benchmark_dtypes_and_the_compiled_formula(tmp_path):
    """--dtype takes several dtypes, each row says its own and its times over
    the float32 row of the same case; the torch.compile'd formula is a peer."""
    out = tmp_path / 'bench.json'
    result = subprocess.run(
        [sys.executable, str(SCRIPT), '--shape', '1', '2', '8', '6', '--cases', '2,2,0',
         '--dtype', 'float32', 'bfloat16', 'float16', '--repeats', '1', '--warmup', '1',
         '--threads', '1', '--json', str(out)],
        check=True, capture_output=True, text=True, timeout=600)
    assert 'float32 bfloat16 float16' in result.stdout.splitlines()[0]
    rows = json.loads(out.read_text())['rows']
    assert [r['dtype'] for r in rows[::5]] == ['float32', 'bfloat16', 'float16']
    assert {r['method'] for r in rows} == {
        'soft_pool2d', 'max_pool2d', 'avg_pool2d', 'pytorch_formula', 'compiled_formula'}
    by_key = {(r['dtype'], r['method']): r for r in rows}
    for (dtype, method), row in by_key.items():
        base = by_key['float32', method]
        for call in ('forward', 'forward_backward'):
            assert row[f'{call}_float32_ratio'] == pytest.approx(
                row[f'{call}_ms'] / base[f'{call}_ms'])
        assert row['forward_backward_peak_mb'] >= 0
