"""Export a SoftPool model to ONNX or to a torch.export program, and check it.

    python tools/deployment/export.py CONFIG CHECKPOINT --format onnx \
        --shape 1 3 512 512 [--dynamic] [--end2end] [--out FILE] \
        [--overwrite] [--benchmark 20]

The input is the preprocessed image (normalised, padded, (N, 3, H, W)). What
comes out:

* a one-stage MMDetection detector (RetinaNet): by default the raw outputs of
  backbone + neck + head (the classification scores and box regressions of
  every FPN level), as MMDeploy exports it before post-processing; with
  ``--end2end`` (ONNX) its boxes: the post-processing in the graph
  (``mmsoftpool.deployment.end2end``), outputs ``dets`` (N, K, 5) and
  ``labels`` (N, K), and the class names and preprocessing in the file's
  metadata (``mmsoftpool.classes``, ``mmsoftpool.preprocess``, JSON);
* a two-stage detector (Faster / Mask R-CNN): ``--end2end`` only, outputs
  ``dets``, ``labels`` and, with a mask head, ``masks`` (N, K, 28, 28: each
  detection's mask probabilities in its box);
* an MMPretrain classifier: the class scores.

SoftPool leaves the graph as standard operators (``mmsoftpool.ops.export``).
The exported model is then run on a random input beside PyTorch eager and the
largest difference printed; ``--format onnx`` also passes ``onnx.checker`` and
runs in ONNX Runtime (CPU). ``--benchmark N`` times both (median of N).
"""
import json
import os.path as osp
import statistics
import time
import warnings

import torch
from torch import nn

import mmsoftpool
from mmsoftpool.checkpoint import CHECKPOINT_ERRORS
from mmsoftpool.deployment import onnxruntime_detector as ort_detector
from mmsoftpool.deployment.end2end import UnsupportedDetector, decided_rows, end2end_wrapper
from mmsoftpool.deployment.nms import ONNX_TRANSLATIONS
from mmsoftpool.engine.hooks.checkpoint_match_hook import compare_state_dicts
from mmsoftpool.tools.launch import (
    ToolParser,
    UserError,
    add_cfg_options_arg,
    add_overwrite_arg,
    checkpoint_source,
    int_at_least,
    load_config,
    output_path,
    positive_int,
    run_tool,
)


class TensorOutputs(nn.Module):
    """The model's tensor graph, its outputs as one flat tuple."""

    def __init__(self, model: nn.Module, kind: str):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, image):
        if self.kind == 'classifier':
            return (self.model(image, mode='tensor'), )
        cls_scores, bbox_preds = self.model._forward(image)
        return (*cls_scores, *bbox_preds)

    def output_names(self) -> list:
        if self.kind == 'classifier':
            return ['cls_score']
        levels = self.model.bbox_head.prior_generator.num_levels
        return ([f'cls_score_{i}' for i in range(levels)] +
                [f'bbox_pred_{i}' for i in range(levels)])


def build(cfg, source: str, config_file: str, end2end: bool):
    """The eval-mode model of ``cfg`` with the checkpoint at ``source``
    (safe loading) on CPU, and what kind of model it is. A checkpoint that
    leaves some of the model's tensors unset is refused."""
    from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model
    if cfg.get('default_scope') == 'mmpretrain':
        from mmpretrain.apis import init_model as init
        kind = 'classifier'
    else:
        from mmdet.apis import init_detector as init
        kind = 'detector'
        if 'roi_head' in cfg.model and not end2end:
            raise UserError(
                f'{cfg.model.type} is a two-stage detector: its raw outputs '
                'are per-RoI, after post-processing; export it with --end2end')
    checkpoint = _load_checkpoint(source, map_location='cpu')
    # record=True keeps init_detector's "checkpoint is None" warning (it
    # resets the filters itself) from the output: the checkpoint is loaded here
    with warnings.catch_warnings(record=True):
        model = init(cfg, None, device='cpu')
    if kind == 'detector' and not hasattr(model, 'bbox_head') and not end2end:
        raise UserError(f'{cfg.model.type}: only detectors with a bbox_head '
                        'export their raw outputs')
    diff = compare_state_dicts(model.state_dict(), checkpoint.get('state_dict', checkpoint))
    if diff['missing'] or diff['mismatched']:
        first = (diff['mismatched'] or diff['missing'])[0]
        raise UserError(
            f'checkpoint {source!r} is not one of the model of {config_file} '
            f'({type(model).__name__}): {len(diff["missing"])} of its tensors '
            f'missing and {len(diff["mismatched"])} of other shapes, e.g. {first}')
    _load_checkpoint_to_model(model, checkpoint)
    meta = checkpoint.get('meta', {}).get('dataset_meta')
    if meta:
        model.dataset_meta = {key.lower(): value for key, value in meta.items()}
    return model.eval(), kind


def dynamic_shapes(dynamic: bool):
    if not dynamic:
        return None
    # AUTO lets torch.export find the constraints (e.g. the FPN's multiples of
    # 32) instead of failing on them
    auto = torch.export.Dim.AUTO
    return ({0: auto, 2: auto, 3: auto}, )


def onnx_nodes(graph):
    """The nodes of ``graph`` and of the branches of its ``If`` nodes."""
    import onnx
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from onnx_nodes(attribute.g)


def export_onnx(wrapper, image, out, dynamic, metadata):
    import onnx
    mmsoftpool.enable_export()  # the plain export users run
    program = torch.onnx.export(
        wrapper, (image, ), dynamo=True, input_names=['input'],
        output_names=wrapper.output_names(),
        dynamic_shapes=dynamic_shapes(dynamic),
        custom_translation_table=ONNX_TRANSLATIONS)
    program.save(out)
    model = onnx.load(out)
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, out)
    onnx.checker.check_model(model, full_check=True)
    op_types = sorted({(n.domain or 'ai.onnx', n.op_type) for n in onnx_nodes(model.graph)})
    foreign = [f'{d}::{t}' for d, t in op_types if d != 'ai.onnx']
    if foreign or model.functions:
        raise UserError(f'{out}: non-standard ONNX nodes {foreign} or functions '
                        f'{[f.name for f in model.functions]} in the graph')
    print(f'[export] ONNX operators: {", ".join(t for _, t in op_types)}')

    import onnxruntime
    session = onnxruntime.InferenceSession(out, providers=['CPUExecutionProvider'])

    def run(x):
        return [torch.from_numpy(o) for o in session.run(None, {'input': x.numpy()})]

    return run


def capture(wrapper, image, dynamic, decompositions=None):
    """``torch.export`` of the wrapper on ``image``, decomposed with
    ``decompositions`` if given."""
    # A dynamic dim of size 1 in the example (batch 1) would be specialised
    # to 1; the ONNX exporter avoids that with the same (private) setting.
    from torch.fx.experimental import _config as fx_config
    with fx_config.patch(backed_size_oblivious=dynamic):
        program = torch.export.export(wrapper, (image, ),
                                      dynamic_shapes=dynamic_shapes(dynamic))
        if decompositions is not None:
            program = program.run_decompositions(decompositions)
    return program


def export_pt2(wrapper, image, out, dynamic, metadata):
    program = capture(wrapper, image, dynamic, mmsoftpool.export_decompositions())
    leftover = [n for n in program.graph.nodes if 'mmsoftpool' in str(n.target)]
    if leftover:
        raise UserError(f'SoftPool nodes left in the graph: {leftover}')
    torch.export.save(program, out)
    module = torch.export.load(out).module()

    def run(x):
        with torch.no_grad():
            return list(module(x))

    return run


def check(run, wrapper, image, out, tolerance):
    """Runs the exported model beside PyTorch on ``image``; the largest
    difference must be within ``tolerance`` of the largest output. For an
    end-to-end detector, on the detections whose rank does not hang on
    rounding (:func:`decided_rows`)."""
    with torch.no_grad():
        expected = wrapper(image)
    got = run(image)
    if not isinstance(wrapper, TensorOutputs):
        detections = int((expected[1] >= 0).sum())
        rows = [decided_rows(dets[:, 4]) for dets in expected[0]]
        expected = [torch.cat([e[i, :n].flatten() for i, n in enumerate(rows)])
                    for e in expected]
        got = [torch.cat([g[i, :n].flatten() for i, n in enumerate(rows)]) for g in got]
        print(f'[export] comparing the first {rows} detections of each image '
              '(the rest tie within 1e-6 in score)')
        if not sum(rows):
            why = ('no detection' if not detections else
                   f'{detections} detections whose scores all tie within 1e-6')
            print(f'[export] {out} at {tuple(image.shape)}: {len(got)} outputs, none '
                  f'to compare: {why} on this random input (tools/test.py --backend '
                  'onnxruntime compares on real images)')
            return
    scale = max(1.0, max(float(e.abs().max()) for e in expected))
    worst = max(float((g - e).abs().max()) for g, e in zip(got, expected))
    print(f'[export] {out} at {tuple(image.shape)}: {len(got)} outputs, max '
          f'|exported - PyTorch| = {worst:.3g} ({worst / scale:.3g} of '
          f'max(1, largest output) = {scale:.3g})')
    if worst > tolerance * scale:
        raise UserError(f'the exported model differs from PyTorch by {worst:.3g}, '
                        f'more than --tolerance {tolerance} x {scale:.3g}')


def median_ms(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def parse_args():
    parser = ToolParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='file or URL, read with safe loading')
    parser.add_argument('--format', choices=('onnx', 'pt2'), default='onnx')
    parser.add_argument('--shape', type=positive_int, nargs=4,
                        default=[1, 3, 512, 512],
                        metavar=('N', 'C', 'H', 'W'), help='the example input')
    parser.add_argument('--dynamic', action='store_true',
                        help='batch, height and width dynamic in the export')
    parser.add_argument('--end2end', action='store_true',
                        help='a detector with its post-processing: outputs '
                        'dets and labels (ONNX only)')
    parser.add_argument('--out', help='default: the config name + .onnx / .pt2')
    add_overwrite_arg(parser)
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest difference allowed, relative to the '
                        'largest output magnitude')
    parser.add_argument('--benchmark', type=int_at_least(0), default=0,
                        metavar='N',
                        help='also time the exported model and PyTorch eager')
    add_cfg_options_arg(parser)
    args = parser.parse_args()
    if not args.tolerance > 0:
        parser.error(f'--tolerance must be positive, got {args.tolerance}')
    if args.end2end and args.format != 'onnx':
        parser.error(f'--end2end exports ONNX (its NMS is ONNX\'s), not --format {args.format}')
    return args


def metadata(cfg, model, kind, end2end) -> dict:
    """What the file carries besides the graph (JSON, no code): the class
    names and, for an end-to-end detector, the preprocessing the graph's
    input assumes, so that an application can run it without the config."""
    props = {ort_detector.META_CLASSES: json.dumps(
        list(getattr(model, 'dataset_meta', {}).get('classes', ())))}
    if not end2end:
        return props
    pre = cfg.model.get('data_preprocessor', {})
    resize = [step for step in cfg.test_dataloader.dataset.pipeline
              if step.get('type') == 'Resize']
    props[ort_detector.META_KIND] = ort_detector.END2END
    props[ort_detector.META_PREPROCESS] = json.dumps(dict(
        mean=list(pre.get('mean', [0, 0, 0])), std=list(pre.get('std', [1, 1, 1])),
        bgr_to_rgb=bool(pre.get('bgr_to_rgb', False)),
        pad_size_divisor=pre.get('pad_size_divisor', 1),
        resize=dict(scale=list(resize[0].scale), keep_ratio=resize[0].get('keep_ratio', False))
        if resize else None))
    return props


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options, None, 'none')
    channels = cfg.model.get('backbone', {}).get('in_channels', 3)
    if args.shape[1] != channels:  # torch would fail deep in the export
        raise UserError(f'--shape {" ".join(map(str, args.shape))}: the model '
                        f'takes {channels} channels (C), as its '
                        'model.backbone.in_channels says')
    checkpoint_source(args.checkpoint, 'checkpoint')
    out = output_path(
        args.out or osp.splitext(osp.basename(args.config))[0] + f'.{args.format}',
        '--out', args.overwrite)
    model, kind = build(cfg, args.checkpoint, args.config, args.end2end)
    if args.end2end:
        if kind != 'detector':
            raise UserError(f'--end2end: {args.config} is not a detector')
        try:
            wrapper = end2end_wrapper(model).eval()
        except UnsupportedDetector as error:
            raise UserError(str(error)) from None
    else:
        wrapper = TensorOutputs(model, kind).eval()
    # A fixed random input: the check gives the same verdict on every run. On
    # noise a detector's scores nearly tie, and a kept detection can tie with
    # a candidate the other runtime keeps instead, which the outputs do not
    # show (3 of 300 random 64x64 inputs for the test's demo RetinaNet).
    noise = torch.Generator().manual_seed(0)
    image = torch.randn(*args.shape, generator=noise)
    if args.end2end and args.dynamic and args.shape[2] == args.shape[3]:
        # traced on a square image, the end-to-end graph comes out with its
        # height and width tied (it then fails on any other aspect ratio)
        image = torch.randn(*args.shape[:3], args.shape[3] + 32, generator=noise)
        print(f'[export] traced at {tuple(image.shape)}: a square example '
              'would tie the dynamic height to the width')
    exporter = export_onnx if args.format == 'onnx' else export_pt2
    run = exporter(wrapper, image, out, args.dynamic,
                   metadata(cfg, model, kind, args.end2end))
    check(run, wrapper, image, out, args.tolerance)
    if args.dynamic:  # another batch and size (multiples of 32 kept for FPNs)
        n, c, h, w = image.shape
        check(run, wrapper, torch.randn(n + 1, c, h + 32, w + 64, generator=noise), out,
              args.tolerance)
    if args.benchmark:
        with torch.no_grad():
            eager = median_ms(lambda: wrapper(image), args.benchmark)
        exported = median_ms(lambda: run(image), args.benchmark)
        runtime = 'onnxruntime' if args.format == 'onnx' else 'torch.export'
        print(f'[export] latency at {tuple(args.shape)}, median of {args.benchmark}, '
              f'{torch.get_num_threads()} threads: PyTorch eager {eager:.1f} ms, '
              f'{runtime} {exported:.1f} ms')


if __name__ == '__main__':
    run_tool(main, CHECKPOINT_ERRORS)
