"""Export: SoftPool as standard operators in ONNX (checked in ONNX Runtime)
and in torch.export programs; the export tool on RetinaNet and a classifier."""
import collections
import os
import os.path as osp
import subprocess
import sys

import onnx
import onnxruntime
import pytest
import torch
from torch.export import Dim

import mmsoftpool
from mmsoftpool.ops.export import paper_formula_sums, soft_pool_forward_decomposition

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
EXPORT = osp.join(REPO, 'tools', 'deployment', 'export.py')
FORWARD = torch.ops.mmsoftpool.soft_pool_forward
mmsoftpool.enable_export()  # the one call a plain torch.onnx.export needs
LAYER = {1: mmsoftpool.SoftPool1d, 2: mmsoftpool.SoftPool2d, 3: mmsoftpool.SoftPool3d}

# (spatial size at export, kernel, stride, padding, ceil_mode): k != s both
# ways, odd sizes, padding, ceil_mode with a last window in the padding and
# with s > k - p (the exporter's Min), padded 3-D windows without ceil_mode
GRID = [
    ((9, ), 3, 2, 1, True), ((10, ), 2, None, 0, False), ((7, ), 4, 3, 2, True),
    ((8, 7), 2, None, 0, False), ((9, 11), 3, 2, 1, False), ((9, 11), 3, 2, 1, True),
    ((7, 9), (3, 2), (1, 2), (1, 0), True), ((10, 9), 3, 1, 1, False),
    ((11, 8), 2, 3, 1, True), ((9, 9), (5, 3), (4, 2), (2, 1), True),
    ((5, 6, 7), 2, None, 0, False), ((6, 5, 7), 3, 2, 1, True),
    ((5, 7, 6), (3, 2, 1), (1, 2, 3), (1, 1, 0), True),
    ((4, 9, 8), (1, 3, 3), (1, 2, 2), (0, 1, 1), False),  # a video stem
]


def special_inputs(shape):
    """Inputs of the parity check, all float32: plain, large, shifted, and
    with NaN / +inf / -inf cells and all -inf windows; and inputs at the
    edges of the paper formula's range (mmsoftpool/ops/export.py): a range
    of 130, cells in float32's denormals beside a window maximum near -52,
    just past overflow (+86) and with every exp a denormal (-95)."""
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen)
    specials = x.clone()
    where = torch.rand(shape, generator=gen)
    specials[where < 0.05] = float('nan')
    specials[(where >= 0.05) & (where < 0.1)] = float('inf')
    specials[(where >= 0.1) & (where < 0.2)] = float('-inf')
    blocks = x.clone()
    blocks[..., :3] = float('-inf')  # windows that are all -inf, or -inf and finite
    deep = x * 0.5 - 52
    deep[..., 1::2] = torch.rand(deep[..., 1::2].shape, generator=gen) * 30 - 110
    return {'randn': x, 'x1e4': x * 1e4, 'shift+1e4': x + 1e4, 'shift-1e4': x - 1e4,
            'uniform1e4': (torch.rand(shape, generator=gen) * 2 - 1) * 1e4,
            'nan/inf': specials, '-inf blocks': blocks,
            'uniform[-50,80]': torch.rand(shape, generator=gen) * 130 - 50,
            'deep cells': deep, 'shift+86': x + 86, 'shift-95': x - 95}


# inputs for which the exported graph takes the paper's formula; 'deep cells'
# too where every window holds one of its shallow cells (the others: exact)
PAPER_FORMULA_INPUTS = {'randn', 'uniform[-50,80]'}


def assert_op_parity(got, expected, name):
    """Within 1e-5 x max(1, |y|) where finite; NaN and infinities exactly."""
    got = torch.as_tensor(got)
    assert got.shape == expected.shape, name
    assert torch.equal(torch.isnan(got), torch.isnan(expected)), name
    finite = torch.isfinite(expected)
    assert torch.equal(got[~finite & ~torch.isnan(expected)],
                       expected[~finite & ~torch.isnan(expected)]), name
    relative = (got[finite] - expected[finite]).abs() / expected[finite].abs().clamp(min=1)
    worst = float(relative.max()) if relative.numel() else 0.0
    assert worst <= 1e-5, (name, worst)
    return worst


def op_types(model):
    """(domain, type) of every node, in If branches too."""
    types = set()

    def read(graph):
        for node in graph.node:
            types.add((node.domain or 'ai.onnx', node.op_type))
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    read(attribute.g)

    read(model.graph)
    return types


def unused_initializers(model):
    """Initializers no node reads, in If branches included (ONNX Runtime
    warns about each one when it loads the model)."""
    used = set()

    def read(graph):
        for node in graph.node:
            used.update(node.input)
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    read(attribute.g)

    read(model.graph)
    return [i.name for i in model.graph.initializer if i.name not in used]


@pytest.mark.parametrize('size,kernel,stride,padding,ceil_mode', GRID)
def test_onnx_export_matches_the_op_in_onnxruntime(tmp_path, size, kernel, stride, padding,
                                                  ceil_mode):
    """A plain torch.onnx.export(dynamo=True) of each layer, batch and spatial
    size dynamic, run in ONNX Runtime at the export size and another one."""
    dim = len(size)
    layer = LAYER[dim](kernel, stride, padding, ceil_mode).eval()
    example = torch.randn(2, 3, *size)
    dynamic = ({axis: Dim.DYNAMIC for axis in [0] + list(range(2, 2 + dim))}, )
    path = str(tmp_path / 'layer.onnx')
    torch.onnx.export(layer, (example, ), path, dynamo=True, dynamic_shapes=dynamic)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert {domain for domain, _ in op_types(model)} == {'ai.onnx'}
    assert not model.functions
    assert not unused_initializers(model)
    # the paper's formula in the main graph (one exp, two average pools, in
    # two passes for 3-D without ceil_mode), the exact formula in the If's
    # other branch
    main = collections.Counter(node.op_type for node in model.graph.node)
    pools = 4 if dim == 3 and not ceil_mode else 2
    assert (main['Exp'], main['AveragePool'], main['If']) == (1, pools, 1), main
    assert not {'Gather', 'Transpose'} & set(main), main
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    worst = 0.0
    for shape in ((2, 3, *size), (1, 3, *(s + 3 for s in size)), (3, 3, *(s + 4 for s in size))):
        for label, x in special_inputs(shape).items():
            (got, ) = session.run(None, {name: x.numpy()})
            worst = max(worst, assert_op_parity(torch.from_numpy(got), layer(x), (shape, label)))
    # docs/deployment.md quotes these (pytest -s)
    print(f'\n[parity] {layer}: worst |onnxruntime - op| / max(1, |y|) = {worst:.2e}')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize('size,kernel,stride,padding,ceil_mode', GRID[::3])
def test_decomposition_equals_the_kernels(dtype, size, kernel, stride, padding, ceil_mode):
    """The decomposition run eagerly, output and log_norm, against the
    compiled op: float32 accumulation for half types, in every dtype."""
    dim = len(size)
    args = mmsoftpool.ops.soft_pool.pool_args('test', dim, kernel, stride, padding, ceil_mode)
    for label, x in special_inputs((2, 3, *size)).items():
        x = x.to(dtype)
        output, log_norm = soft_pool_forward_decomposition(x, *args)
        expected, expected_log_norm = FORWARD(x, *args)
        assert output.dtype == dtype and log_norm.dtype == expected_log_norm.dtype
        tol = dict(rtol=1e-5, atol=1e-5) if dtype in (torch.float32, torch.float64) else {}
        if dtype in (torch.float16, torch.bfloat16):  # one rounding of the same float32 value
            tol = dict(rtol=torch.finfo(dtype).eps, atol=torch.finfo(dtype).eps)
        torch.testing.assert_close(output, expected, equal_nan=True, msg=label, **tol)
        torch.testing.assert_close(log_norm, expected_log_norm, equal_nan=True, msg=label,
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('size,kernel,stride,padding,ceil_mode', GRID[::3])
def test_paper_formula_is_taken_where_it_is_exact(size, kernel, stride, padding, ceil_mode):
    """The If's condition: the paper's formula for ordinary activations, also
    at the edges of its range; the exact one past overflow, with denormal
    exps, large values, NaN and infinities."""
    dim = len(size)
    args = mmsoftpool.ops.soft_pool.pool_args('test', dim, kernel, stride, padding, ceil_mode)
    max_pool = getattr(torch.nn.functional, f'max_pool{dim}d')
    for label, x in special_inputs((2, 3, *size)).items():
        w, t, holds = paper_formula_sums(x, *args)
        expected = label in PAPER_FORMULA_INPUTS
        if label == 'deep cells':
            kernel_size, stride, padding, ceil_mode = args
            expected = bool(max_pool((x > -60).float(), kernel_size, stride, padding,
                                     ceil_mode=ceil_mode).all())
        assert bool(holds) == expected, label
        if holds:
            assert_op_parity(w / t, FORWARD(x, *args)[0], label)


def test_torch_export_decomposes_with_the_table():
    """ep.run_decompositions(export_decompositions()): no SoftPool node, the
    dynamic dims kept, the same values as eager."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), mmsoftpool.SoftPool2d(3, 2, 1, True))
    example = torch.randn(2, 3, 15, 12)
    program = torch.export.export(model, (example, ),
                                  dynamic_shapes=({0: Dim.DYNAMIC, 2: Dim.DYNAMIC,
                                                   3: Dim.DYNAMIC}, ))
    assert any('mmsoftpool' in str(node.target) for node in program.graph.nodes)
    decomposed = program.run_decompositions(mmsoftpool.export_decompositions())
    assert not any('mmsoftpool' in str(node.target) for node in decomposed.graph.nodes)
    for shape in ((2, 3, 15, 12), (3, 3, 9, 20)):
        x = torch.randn(shape)
        torch.testing.assert_close(decomposed.module()(x), model(x), rtol=1e-5, atol=1e-5)


def test_eager_and_compile_still_run_the_kernels():
    """Registering the decomposition leaves eager dispatch alone (no
    CompositeImplicitAutograd kernel) and torch.compile with dynamic shapes on
    channels_last keeps the op's own fake (strides included)."""
    name = FORWARD.default.name()
    assert not torch._C._dispatch_has_kernel_for_dispatch_key(name, 'CompositeImplicitAutograd')
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, 'CPU')
    torch._dynamo.reset()

    def step(x):
        return mmsoftpool.soft_pool2d(x, 3, 2, 1).square().sum()

    compiled = torch.compile(step, dynamic=True, backend='aot_eager', fullgraph=True)
    for shape in ((2, 4, 11, 10), (3, 4, 13, 9)):
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_()
        (dx, ) = torch.autograd.grad(compiled(x), x)
        x_eager = x.detach().requires_grad_()
        (dx_eager, ) = torch.autograd.grad(step(x_eager), x_eager)
        torch.testing.assert_close(dx, dx_eager)


# A fresh process: what import does to torch, and torch.compile (inductor,
# with CI set, which makes inductor strict about fallbacks) before any export
# was enabled.
IMPORT_AND_COMPILE = '''
import sys
import torch
import mmsoftpool
forward = torch.ops.mmsoftpool.soft_pool_forward.default
assert forward not in torch._decomp.decomposition_table, 'import wrote the table'
# torch._dynamo (which torch.library loads) imports torch._inductor.config
# itself; inductor's lowerings are what the export table used to pull in
assert 'torch._inductor.lowering' not in sys.modules

def step(x):
    return mmsoftpool.soft_pool2d(x.relu(), 3, 2, 1).square().sum()

x = torch.randn(2, 4, 11, 10, requires_grad=True)
(dx, ) = torch.autograd.grad(torch.compile(step, fullgraph=True)(x), x)
x_eager = x.detach().requires_grad_()
(dx_eager, ) = torch.autograd.grad(step(x_eager), x_eager)
torch.testing.assert_close(dx, dx_eager)
mmsoftpool.enable_export()
mmsoftpool.enable_export()  # a second call changes nothing
assert torch._decomp.decomposition_table[forward].__module__ == 'mmsoftpool.ops.export'
print('ok')
'''


def test_import_changes_no_torch_table_and_compile_runs_without_export(tmp_path):
    """``import mmsoftpool`` imports none of inductor's lowerings and writes no
    torch table; torch.compile runs the kernels with export never enabled.
    (After :func:`mmsoftpool.enable_export`, as in this test process:
    tests/test_soft_pool.py::test_torch_compile_fullgraph.)"""
    env = dict(os.environ, CI='1', TORCHINDUCTOR_CACHE_DIR=str(tmp_path / 'inductor'))
    result = subprocess.run([sys.executable, '-c', IMPORT_AND_COMPILE], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr[-3000:]


# --- the export tool, run as users run it, from their own folder ----------


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """Randomly initialised checkpoints of the RetinaNet-R18 and ResNet-18
    classifier configs (the weights do not matter for parity)."""
    from mmdet.registry import MODELS as DET_MODELS
    from mmengine.config import Config
    from mmpretrain.registry import MODELS as CLS_MODELS
    folder = tmp_path_factory.mktemp('export')
    paths = {}
    for key, config, registry in (
            ('retinanet', 'configs/retinanet/retinanet_r18_softpool.py', DET_MODELS),
            ('classifier', 'configs/pretrain/resnet18-softpool_8xb32_in1k.py', CLS_MODELS)):
        cfg = Config.fromfile(osp.join(REPO, config))
        cfg.model.backbone.init_cfg = None
        paths[key] = (osp.join(REPO, config), str(folder / f'{key}.pth'))
        # the library's own registry: no default scope left behind for other tests
        torch.save({'state_dict': registry.build(cfg.model).state_dict()}, paths[key][1])
    return folder, paths


def export(folder, *args):
    return subprocess.run([sys.executable, EXPORT, *args], cwd=folder, capture_output=True,
                          text=True, timeout=600)


def export_lines(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if line.startswith('[export]')]


@pytest.mark.slow
def test_export_tool_retinanet_onnx_dynamic(checkpoints):
    folder, paths = checkpoints
    config, checkpoint = paths['retinanet']
    lines = export_lines(export(folder, config, checkpoint, '--format', 'onnx',
                                '--shape', '1', '3', '256', '256', '--dynamic'))
    assert 'mmsoftpool' not in lines[0] and 'Conv' in lines[0]
    assert '(1, 3, 256, 256): 10 outputs' in lines[1]  # 5 levels, scores and boxes
    assert '(2, 3, 288, 320): 10 outputs' in lines[2]  # dynamic batch and size
    model = onnx.load(str(folder / 'retinanet_r18_softpool.onnx'))
    assert [o.name for o in model.graph.output][:2] == ['cls_score_0', 'cls_score_1']


@pytest.mark.slow
@pytest.mark.parametrize('format', ['onnx', 'pt2'])
def test_export_tool_classifier(checkpoints, format):
    folder, paths = checkpoints
    config, checkpoint = paths['classifier']
    lines = export_lines(export(folder, config, checkpoint, '--format', format,
                                '--shape', '1', '3', '224', '224', '--dynamic'))
    assert any('(2, 3, 256, 288): 1 outputs' in line for line in lines)
    assert osp.isfile(folder / f'resnet18-softpool_8xb32_in1k.{format}')


@pytest.mark.slow
def test_export_tool_refuses_raw_two_stage_outputs(checkpoints):
    """A two-stage detector exports end to end only (tests/test_end2end.py):
    without --end2end, one line and exit code 2, before any checkpoint is read."""
    folder, paths = checkpoints
    result = export(folder, osp.join(REPO, 'configs/mask_rcnn/mask-rcnn_r34_softpool.py'),
                    paths['retinanet'][1])
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        'MaskRCNN is a two-stage detector: its raw outputs are per-RoI, after '
        'post-processing; export it with --end2end')
