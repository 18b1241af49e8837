"""Time SoftPool exported to ONNX in ONNX Runtime, as ratios measured in one run.

    python tools/analysis_tools/benchmark_onnx.py --backend onnxruntime \
        [--threads 2] [--repeats 20] [--layers | --models] [--profile]

Layers: a SoftPool layer of each ``--cases`` (kernel,stride,padding), exported
with a plain ``torch.onnx.export(dynamo=True)`` at each ``--shape``, against
graphs of ONNX Runtime's own ``Exp`` and ``MaxPool`` (same kernel, stride and
padding) on the same tensor, and (2-D) against the floor of any graph of the
paper's formula: ``Exp``, ``Mul`` and two ``AveragePool`` nodes alone, the
operators it cannot do without (``floor``). Models: the SoftPoolResNet-18 classifier at
1x3x224x224 and RetinaNet-R18 (backbone, neck and head, as
``tools/deployment/export.py`` exports it) at 1x3x512x512, each against the
same config with its max-pool stem (``stem_pool_cfg=None``), randomly
initialised (the weights do not change the graph).

The sessions of one comparison run on the CPU with ``intra_op_num_threads``
fixed, in turns (one run of each per round, ``--repeats`` rounds after
``--warmup``); the table gives medians and their ratios. These machines are
noisy: compare the ratios of one run, not milliseconds across runs.

The exported SoftPool takes the paper's formula where it is exact for its input
and the exact per-window one otherwise (``mmsoftpool/ops/export.py``): the
``formula`` column says which one this input took. ``--offset`` adds a constant
to the layers' input (e.g. 1000: the exact formula). ``--profile`` adds ONNX
Runtime's profile of each SoftPool graph: the time per run of each operator
type (ReorderInput/ReorderOutput are ONNX Runtime's conversions to and from its
blocked NCHWc layout).
"""
import argparse
import collections
import json
import os
import os.path as osp
import platform
import statistics
import sys
import tempfile
import time

import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MODELS = {
    'SoftPoolResNet-18': ('configs/pretrain/resnet18-softpool_8xb32_in1k.py', (1, 3, 224, 224)),
    'RetinaNet-R18': ('configs/retinanet/retinanet_r18_softpool.py', (1, 3, 512, 512)),
}


def onnx_graph(op_type, shape, **attributes):
    """A model of one ONNX Runtime operator on a float32 tensor of ``shape``."""
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node(op_type, ['x'], ['y'], **attributes)], op_type,
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)])
    # IR 10: what onnxruntime 1.31 reads (onnx 1.23 writes 11 by default)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)],
                             ir_version=10).SerializeToString()


def paper_floor_graph(shape, kernel, stride, padding):
    """``e = Exp(x)``, ``AveragePool(e)`` and ``AveragePool(x * e)``: what
    any standard-operator graph of ``avg_pool(x e^x) / avg_pool(e^x)`` runs
    at least, without the division and the choice of formula."""
    from onnx import TensorProto, helper
    pool = dict(kernel_shape=list(kernel), strides=list(stride), pads=list(padding) * 2,
                count_include_pad=1)
    graph = helper.make_graph(
        [helper.make_node('Exp', ['x'], ['e']), helper.make_node('Mul', ['x', 'e'], ['xe']),
         helper.make_node('AveragePool', ['e'], ['t'], **pool),
         helper.make_node('AveragePool', ['xe'], ['w'], **pool)], 'floor',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in 'tw'])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)],
                             ir_version=10).SerializeToString()


def session(model, threads, profile_prefix=None):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # no warnings about unused initializers
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return onnxruntime.InferenceSession(model, options, providers=['CPUExecutionProvider'])


def export(module, shape, path):
    import mmsoftpool
    mmsoftpool.enable_export()
    module.eval()
    torch.onnx.export(module, (torch.randn(*shape), ), path, dynamo=True, verbose=False)
    return path


def time_in_turns(sessions, inputs, warmup, repeats):
    """Median milliseconds of each session, run in turns."""
    feeds = {name: {s.get_inputs()[0].name: inputs[name]} for name, s in sessions.items()}
    times = {name: [] for name in sessions}
    for _ in range(warmup):
        for name, s in sessions.items():
            s.run(None, feeds[name])
    for _ in range(repeats):
        for name, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feeds[name])
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def profile(model, feed, threads, runs, folder):
    """ONNX Runtime's profile: median microseconds per run of each operator
    type (the nodes of an ``If`` branch are counted inside the ``If`` too)."""
    s = session(model, threads, osp.join(folder, 'profile'))
    name = s.get_inputs()[0].name
    for _ in range(runs):
        s.run(None, {name: feed})
    with open(s.end_profiling()) as f:
        events = json.load(f)
    per_node = collections.defaultdict(list)
    for event in events:
        if event.get('cat') == 'Node' and event['name'].endswith('_kernel_time'):
            per_node[(event['args']['op_name'], event['name'])].append(event['dur'])
    per_type = collections.Counter()
    for (op_type, _), durations in per_node.items():
        per_type[op_type] += statistics.median(durations)
    return dict(per_type.most_common())


def formula_taken(x, layer):
    """'paper' if the exported graph's If takes the paper's formula for x."""
    from mmsoftpool.ops.export import paper_formula_sums
    args = (layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode)
    with torch.no_grad():
        return 'paper' if bool(paper_formula_sums(x.float(), *args)[2]) else 'exact'


def benchmark_layers(args, folder):
    import mmsoftpool
    layers = {1: mmsoftpool.SoftPool1d, 2: mmsoftpool.SoftPool2d, 3: mmsoftpool.SoftPool3d}
    rows = []
    for shape in args.shape:
        dims = len(shape) - 2
        x = torch.randn(*shape) + args.offset
        feed = x.numpy()
        for case in args.cases:
            k, s, p = (v * dims if len(v) == 1 else v for v in case)
            layer = layers[dims](k, s, p)
            path = export(layer, shape, osp.join(folder, 'softpool.onnx'))
            sessions = {
                'softpool': session(path, args.threads),
                'exp': session(onnx_graph('Exp', shape), args.threads),
                'max_pool': session(onnx_graph('MaxPool', shape, kernel_shape=list(k),
                                               strides=list(s), pads=list(p) * 2),
                                    args.threads),
            }
            if dims == 2:
                sessions['floor'] = session(paper_floor_graph(shape, k, s, p), args.threads)
            t = time_in_turns(sessions, dict.fromkeys(sessions, feed), args.warmup,
                              args.repeats)
            name = ', '.join(str(v[0]) if len(set(v)) == 1 else str(v) for v in (k, s, p))
            row = dict(what=f'SoftPool{dims}d({name})', shape='x'.join(map(str, shape)),
                       formula=formula_taken(x, layer), softpool_ms=t['softpool'],
                       exp_ms=t['exp'], max_pool_ms=t['max_pool'],
                       softpool_per_exp=t['softpool'] / t['exp'],
                       softpool_per_max_pool=t['softpool'] / t['max_pool'])
            if 'floor' in t:
                row.update(floor_ms=t['floor'], floor_per_exp=t['floor'] / t['exp'],
                           softpool_per_floor=t['softpool'] / t['floor'])
            if args.profile:
                row['profile_us'] = profile(path, feed, args.threads, args.repeats, folder)
            rows.append(row)
            print_row(row)
    return rows


class TensorOutputs(torch.nn.Module):
    """The network's tensor graph, as tools/deployment/export.py exports it."""

    def __init__(self, model, classifier):
        super().__init__()
        self.model, self.classifier = model, classifier

    def forward(self, image):
        if self.classifier:
            return self.model(image, mode='tensor')
        cls_scores, bbox_preds = self.model._forward(image)
        return (*cls_scores, *bbox_preds)


def build_model(config, max_pool_stem):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, config))
    cfg.model.backbone.init_cfg = None
    if max_pool_stem:
        cfg.model.backbone.stem_pool_cfg = None
    if cfg.get('default_scope') == 'mmpretrain':
        from mmpretrain.apis import init_model
        return TensorOutputs(init_model(cfg, None, device='cpu'), True)
    from mmdet.apis import init_detector
    return TensorOutputs(init_detector(cfg, None, device='cpu'), False)


def stem_formula(model, image):
    """Which formula the stem SoftPool takes for ``image``."""
    import mmsoftpool
    taken = []

    def hook(layer, inputs):
        taken.append(formula_taken(inputs[0], layer))

    layers = (mmsoftpool.SoftPool1d, mmsoftpool.SoftPool2d, mmsoftpool.SoftPool3d)
    handles = [m.register_forward_pre_hook(hook) for m in model.modules()
               if isinstance(m, layers)]
    with torch.no_grad():
        model(image)
    for handle in handles:
        handle.remove()
    return ', '.join(taken)


def benchmark_models(args, folder):
    rows = []
    for name in args.model:
        config, shape = MODELS[name]
        image = torch.randn(*shape)
        paths, formula = {}, ''
        for variant, max_pool_stem in (('softpool', False), ('max_pool', True)):
            model = build_model(config, max_pool_stem).eval()
            if not max_pool_stem:
                formula = stem_formula(model, image)
            paths[variant] = export(model, shape, osp.join(folder, f'{name}_{variant}.onnx'))
            del model
        sessions = {v: session(p, args.threads) for v, p in paths.items()}
        t = time_in_turns(sessions, dict.fromkeys(sessions, image.numpy()), args.warmup,
                          args.repeats)
        row = dict(what=name, shape='x'.join(map(str, shape)), formula=formula,
                   softpool_ms=t['softpool'], max_pool_ms=t['max_pool'],
                   softpool_per_max_pool=t['softpool'] / t['max_pool'])
        if args.profile:
            row['profile_us'] = profile(paths['softpool'], image.numpy(), args.threads,
                                        args.repeats, folder)
        rows.append(row)
        print_row(row)
    return rows


def print_row(row):
    times = ', '.join(f'{key[:-3]} {row[key]:.3f} ms' for key in row if key.endswith('_ms'))
    ratios = ', '.join(f'{key.replace("_per_", " / ")} {row[key]:.2f}x' for key in row
                       if '_per_' in key)
    print(f'[onnxruntime] {row["what"]} {row["shape"]} ({row["formula"]} formula): '
          f'{ratios} ({times})', flush=True)
    for op_type, us in row.get('profile_us', {}).items():
        print(f'    {op_type:<16} {us:9.1f} us/run')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--backend', choices=['onnxruntime'], default='onnxruntime',
                        help='the runtime (ONNX Runtime, CPU)')
    what = parser.add_mutually_exclusive_group()
    what.add_argument('--layers', action='store_true', help='only the layers')
    what.add_argument('--models', action='store_true', help='only the models')
    parser.add_argument('--shape', type=input_shape, nargs='+',
                        default=[(1, 64, 112, 112), (16, 64, 112, 112)],
                        help='layer input shapes: NxCxL, NxCxHxW or NxCxDxHxW')
    parser.add_argument('--cases', type=pool_case, nargs='+',
                        default=[((2, ), (2, ), (0, )), ((3, ), (2, ), (1, ))],
                        help='layer kernel,stride,padding triples (3,2,1 or 1x3x3,1x2x2,0x1x1)')
    parser.add_argument('--offset', type=float, default=0.0,
                        help='added to the layers\' randn input')
    parser.add_argument('--model', nargs='+', choices=list(MODELS), default=list(MODELS))
    parser.add_argument('--threads', type=positive, default=2, help='intra_op_num_threads')
    parser.add_argument('--warmup', type=count, default=3)
    parser.add_argument('--repeats', type=positive, default=20)
    parser.add_argument('--profile', action='store_true',
                        help='also ONNX Runtime\'s per-operator profile of the SoftPool graphs')
    parser.add_argument('--json', help='also write the rows to this JSON file')
    args = parser.parse_args()
    for shape in args.shape:
        dims = len(shape) - 2
        for case in args.cases:
            k, s, p = (v * dims if len(v) == 1 else v for v in case)
            text = ','.join('x'.join(map(str, v)) for v in case)
            if len(k) != dims or len(s) != dims or len(p) != dims:
                parser.error(f'--cases {text}: one value or {dims} per dim expected for '
                             f'--shape {"x".join(map(str, shape))}')
            if any(pad > kernel // 2 for kernel, pad in zip(k, p)):
                parser.error(f'--cases {text}: the padding must be at most half the kernel')
    return args


def input_shape(text):
    try:
        shape = tuple(int(v) for v in text.split('x'))
    except ValueError:
        shape = ()
    if len(shape) not in (3, 4, 5) or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            'NxCxL, NxCxHxW or NxCxDxHxW with positive sizes expected, e.g. 1x64x112x112, '
            f'got {text!r}')
    return shape


def pool_case(text):
    """kernel,stride,padding: each an int or one per dim joined by x (1x3x3)."""
    try:
        case = tuple(tuple(int(v) for v in part.split('x')) for part in text.split(','))
    except ValueError:
        case = ()
    lengths = {len(part) for part in case} - {1}
    if (len(case) != 3 or len(lengths) > 1 or min(min(part) for part in case[:2]) < 1
            or min(case[2]) < 0):
        raise argparse.ArgumentTypeError(
            'kernel,stride,padding expected, each an int or one per dim joined by x, '
            f'e.g. 3,2,1 or 1x3x3,1x2x2,0x1x1, got {text!r}')
    return case


def count(text, least=0):
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(f'an integer >= {least} expected, got {text!r}')
    return value


def positive(text):
    return count(text, 1)


def main():
    args = parse_args()
    import onnxruntime
    header = (f'onnxruntime {onnxruntime.__version__} (CPU), torch {torch.__version__}, '
              f'{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs, load '
              f'{os.getloadavg()[0]:.1f}), intra_op_num_threads={args.threads}, medians of '
              f'{args.repeats} runs in turns')
    print(header, flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        if not args.models:
            rows += benchmark_layers(args, folder)
        if not args.layers:
            rows += benchmark_models(args, folder)
    print(f'[onnxruntime] load at the end {os.getloadavg()[0]:.1f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(setup=header, args={k: v for k, v in vars(args).items()},
                           rows=rows), f, indent=2)


if __name__ == '__main__':
    sys.exit(main())
