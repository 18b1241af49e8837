"""Detect objects in an image or a folder of images with a config and a
checkpoint, and write the painted results (mmdet's DetInferencer).

    python tools/inference.py IMAGE_OR_FOLDER CONFIG CHECKPOINT \
        [--out-dir outputs] [--score-thr 0.3] [--device cpu] [--overwrite]
    python tools/inference.py IMAGE_OR_FOLDER CONFIG MODEL.onnx \
        --backend onnxruntime

With ``--backend onnxruntime``, MODEL.onnx is an end-to-end detector
exported by ``tools/deployment/export.py --end2end``, run in ONNX Runtime
(CPU); the config gives its preprocessing, as for the PyTorch model, and the
results are painted the same way.

Writes ``OUT_DIR/vis/<image name>`` (boxes, and masks for Mask R-CNN, with
class names and scores) and ``OUT_DIR/preds/<image name>.json``. The
checkpoint is read with the project's safe loading. Results already in
``OUT_DIR/vis`` or ``OUT_DIR/preds`` are replaced only with ``--overwrite``.
"""
import os.path as osp
import warnings

import cv2

import mmsoftpool  # noqa: F401  SoftPool layers, backbones, safe loading
from mmsoftpool.checkpoint import CHECKPOINT_ERRORS
from mmsoftpool.deployment.onnxruntime_detector import ONNXModelError, onnxruntime_model_cfg
from mmsoftpool.tools.launch import (
    ToolParser,
    UserError,
    add_overwrite_arg,
    checkpoint_source,
    device_arg,
    load_config,
    output_path,
    positive_int,
    run_tool,
)


def main():
    parser = ToolParser(description=__doc__.splitlines()[0])
    parser.add_argument('inputs', help='an image file or a folder of images')
    parser.add_argument('config', help='the detector config')
    parser.add_argument('checkpoint', help='its checkpoint (file or URL), or '
                        'with --backend onnxruntime its end-to-end ONNX file')
    parser.add_argument('--backend', choices=('pytorch', 'onnxruntime'),
                        default='pytorch')
    parser.add_argument('--out-dir', default='outputs',
                        help='where the painted images and predictions go')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='boxes below this score are not drawn')
    parser.add_argument('--device', type=device_arg, default='cpu',
                        help='cpu, cuda, cuda:1 ...')
    parser.add_argument('--batch-size', type=positive_int, default=1)
    add_overwrite_arg(parser)
    args = parser.parse_args()
    if not 0 <= args.score_thr <= 1:  # scores are probabilities
        parser.error(f'--score-thr must be in [0, 1], got {args.score_thr}')
    if not osp.exists(args.inputs):
        raise UserError(f'inputs: no such file or folder {args.inputs!r}')
    if osp.isfile(args.inputs) and not cv2.haveImageReader(args.inputs):
        # mmcv reads images with OpenCV; it would fail deep in the inferencer
        raise UserError(f'inputs: {args.inputs!r} is not an image OpenCV '
                        'reads')
    cfg = load_config(args.config, None, None, 'none')
    if args.backend == 'onnxruntime':
        if args.device != 'cpu':
            raise UserError('--backend onnxruntime runs on the CPU, not '
                            f'--device {args.device}')
    else:
        checkpoint_source(args.checkpoint, 'checkpoint')
    for results in ('vis', 'preds'):
        output_path(osp.join(args.out_dir, results), '--out-dir',
                    args.overwrite, folder=True)

    from mmdet.apis import DetInferencer
    if args.backend == 'onnxruntime':
        onnxruntime_model_cfg(cfg, args.checkpoint)
        # "weights is None": the file holds them (record=True: the inferencer
        # may reset the warning filters)
        with warnings.catch_warnings(record=True):
            inferencer = DetInferencer(model=cfg, weights=None, device='cpu')
        # the class names the ONNX file carries, not the COCO default
        classes = inferencer.model.session_classes
        meta = dict(inferencer.model.dataset_meta, classes=classes)
        inferencer.model.dataset_meta = inferencer.visualizer.dataset_meta = meta
    else:
        inferencer = DetInferencer(
            model=cfg, weights=args.checkpoint, device=args.device)
    results = inferencer(
        args.inputs,
        batch_size=args.batch_size,
        out_dir=args.out_dir,
        pred_score_thr=args.score_thr,
        no_save_pred=False)
    shown = sum(
        any(score >= args.score_thr for score in prediction['scores'])
        for prediction in results['predictions'])
    print(f'{len(results["predictions"])} images, {shown} with a box above '
          f'{args.score_thr}: painted results in '
          f'{osp.join(args.out_dir, "vis")}, predictions in '
          f'{osp.join(args.out_dir, "preds")}')


if __name__ == '__main__':
    run_tool(main, CHECKPOINT_ERRORS + (ONNXModelError, ))
