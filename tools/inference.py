"""Detect objects in an image or a folder of images with a config and a
checkpoint, and write the painted results (mmdet's DetInferencer).

    python tools/inference.py IMAGE_OR_FOLDER CONFIG CHECKPOINT \
        [--out-dir outputs] [--score-thr 0.3] [--device cpu]

Writes ``OUT_DIR/vis/<image name>`` (boxes, and masks for Mask R-CNN, with
class names and scores) and ``OUT_DIR/preds/<image name>.json``. The
checkpoint is read with the project's safe loading.
"""
import argparse
import os.path as osp

import mmsoftpool  # noqa: F401  SoftPool layers, backbones, safe loading
from mmsoftpool.tools.launch import UserError, run_tool


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('inputs', help='an image file or a folder of images')
    parser.add_argument('config', help='the detector config')
    parser.add_argument('checkpoint', help='its checkpoint (file or URL)')
    parser.add_argument('--out-dir', default='outputs',
                        help='where the painted images and predictions go')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='boxes below this score are not drawn')
    parser.add_argument('--device', default='cpu', help='cpu, cuda, cuda:1 ...')
    parser.add_argument('--batch-size', type=int, default=1)
    args = parser.parse_args()
    for path, what in ((args.inputs, 'inputs'), (args.config, 'config')):
        if not osp.exists(path):
            raise UserError(f'{what}: no such file or folder {path!r}')
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise UserError(f'checkpoint: no such file {args.checkpoint!r}')

    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(
        model=args.config, weights=args.checkpoint, device=args.device)
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
    run_tool(main)
