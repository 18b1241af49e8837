"""How much of an image each pooling method keeps (SoftPool paper, Tables 1, 3).

Pools every image with SoftPool, average, maximum, power-average and
stochastic pooling at kernel sizes 2, 3, 5 and reports SSIM and PSNR against
the original, averaged over the images, as a table like the paper's; the
per-image values go to CSV and, with the protocol, to JSON.

Example::

    python tools/analysis_tools/pool_similarity.py                # scikit-image photographs
    python tools/analysis_tools/pool_similarity.py --img-dir data/DIV2K_valid_HR

Results already in ``--out-dir`` are replaced only with ``--overwrite``.
"""
import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.utils import track_iter_progress
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mmsoftpool.tools.analysis import (
    METHODS,
    SAMPLE_IMAGES,
    find_images,
    image_to_tensor,
    load_image,
    method_label,
    pool_at_scale,
)
from mmsoftpool.tools.launch import (
    ToolParser,
    add_overwrite_arg,
    output_path,
    run_tool,
    user_errors,
)

PROTOCOL = """\
comparison protocol (the same for every method):
  1. the image is read as float64 in [0, 1]; each colour channel is one
     activation map, multiplied by --scale (default 1) before pooling and
     divided by it after;
  2. it is pooled with a k x k kernel and stride k (no padding, floor mode);
  3. the pooled image is upsampled by k back to the size the windows cover
     (--upsample: 'nearest' repeats each output over the k x k window it
     replaces; 'bilinear' interpolates between window centres), and
     compared with the original cropped to that size (the last H mod k rows
     and W mod k columns, which no window covers, are left out);
  4. SSIM: skimage.metrics.structural_similarity with data_range=1,
     Gaussian 11x11 window, sigma 1.5, population covariance (Wang et al.
     2004), averaged over channels; PSNR: peak_signal_noise_ratio with
     data_range=1. The table shows the mean over images.
Power-average is the power mean (mean of x^p)^(1/p) (F.lp_pool2d divided by
k^(2/p)); stochastic pooling draws one value per window with probability
proportional to its value, with a generator seeded by --seed for every
image and kernel. Sum pooling is not listed: normalised, it is average
pooling.
"""


SSIM_WINDOW = 11  # the Gaussian window of sigma 1.5 that skimage uses


def parse_args(args=None):
    parser = ToolParser(
        description='SSIM and PSNR between images and their pooled versions '
        'for several pooling methods (SoftPool paper, Tables 1 and 3).',
        epilog=PROTOCOL,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        '--img-dir',
        help='folder of images (default: the scikit-image sample '
        f'photographs {", ".join(SAMPLE_IMAGES)})')
    source.add_argument(
        '--images',
        nargs='+',
        help='image files or scikit-image sample names')
    parser.add_argument(
        '--kernels',
        type=int,
        nargs='+',
        default=[2, 3, 5],
        help='kernel sizes k (stride k)')
    parser.add_argument(
        '--methods', nargs='+', choices=METHODS, default=list(METHODS))
    parser.add_argument(
        '--power', type=float, default=2.0, help='p of power-average')
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of stochastic pooling')
    parser.add_argument(
        '--upsample',
        choices=['nearest', 'bilinear'],
        default='nearest',
        help='how a pooled image is brought back to the original size')
    parser.add_argument(
        '--scale',
        type=float,
        default=1.0,
        help='activation = pixel value in [0, 1] times scale. Only SoftPool '
        'depends on it: it weighs by exp(activation), so it is near average '
        'pooling for small scales and near max pooling for large ones')
    parser.add_argument(
        '--out-dir',
        default='work_dirs/pool_similarity',
        help='where pool_similarity.csv and pool_similarity.json go')
    add_overwrite_arg(parser)
    args = parser.parse_args(args)
    if any(k < 2 for k in args.kernels):
        parser.error(f'--kernels must be >= 2 (1 does not downsample), got '
                     f'{args.kernels}')
    if not (math.isfinite(args.scale) and args.scale > 0):
        parser.error(f'--scale must be positive and finite, got {args.scale}')
    if not (math.isfinite(args.power) and args.power >= 1):
        parser.error(f'--power must be finite and >= 1, got {args.power}')
    return args


def similarity(reference: np.ndarray,
               image: np.ndarray) -> Tuple[float, float]:
    """(SSIM, PSNR) of two (H, W, C) float images in [0, 1]."""
    ssim = structural_similarity(
        reference,
        image,
        data_range=1.0,
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False)
    with np.errstate(divide='ignore'):  # identical images: PSNR is inf
        psnr = peak_signal_noise_ratio(reference, image, data_range=1.0)
    return float(ssim), float(psnr)


def pool_and_restore(image: torch.Tensor, method: str, kernel: int,
                     upsample: str, scale: float, power: float,
                     seed: int) -> torch.Tensor:
    """Pool a (1, C, H, W) image and upsample it back by ``kernel``."""
    pooled = pool_at_scale(
        image, method, kernel, scale=scale, power=power, seed=seed)
    size = (pooled.shape[-2] * kernel, pooled.shape[-1] * kernel)
    if upsample == 'nearest':
        return F.interpolate(pooled, size=size, mode='nearest')
    # align_corners=False puts each output at the centre of its window.
    return F.interpolate(
        pooled, size=size, mode=upsample, align_corners=False)


def check_image_size(image: np.ndarray, name: str,
                     kernels: Sequence[int]) -> None:
    """At every kernel the compared area must hold the SSIM window."""
    for kernel in kernels:
        if min(image.shape[:2]) // kernel * kernel < SSIM_WINDOW:
            raise ValueError(
                f'image {name!r} of size {image.shape[:2]} is too small: '
                f'with kernel {kernel} the compared area must be at least '
                f'{SSIM_WINDOW}x{SSIM_WINDOW} (the SSIM window)')


def evaluate_image(image: np.ndarray, name: str, methods: Sequence[str],
                   kernels: Sequence[int], upsample: str, scale: float,
                   power: float, seed: int) -> List[Dict]:
    """One row (image, method, kernel, ssim, psnr) per method and kernel."""
    tensor = image_to_tensor(image)
    check_image_size(image, name, kernels)
    rows = []
    for kernel in kernels:
        for method in methods:
            restored = pool_and_restore(tensor, method, kernel, upsample,
                                        scale, power, seed)
            restored = restored[0].permute(1, 2, 0).numpy()
            h, w = restored.shape[:2]
            ssim, psnr = similarity(image[:h, :w], restored)
            rows.append(
                dict(
                    image=name,
                    method=method,
                    kernel=kernel,
                    ssim=ssim,
                    psnr=psnr))
    return rows


def mean_table(rows: Sequence[Dict]) -> List[Dict]:
    """Mean SSIM and PSNR over images, one entry per (method, kernel)."""
    groups: Dict[Tuple[str, int], List[Dict]] = {}
    for row in rows:
        groups.setdefault((row['method'], row['kernel']), []).append(row)
    return [
        dict(
            method=method,
            kernel=kernel,
            ssim=float(np.mean([r['ssim'] for r in group])),
            psnr=float(np.mean([r['psnr'] for r in group])),
            images=len(group)) for (method, kernel), group in groups.items()
    ]


def format_table(means: Sequence[Dict], power: float, seed: int) -> str:
    """A Markdown table like the paper's: methods x (k: SSIM, PSNR).

    The best value of each column is bold, as in the paper.
    """
    methods = list(dict.fromkeys(m['method'] for m in means))
    kernels = list(dict.fromkeys(m['kernel'] for m in means))
    cell = {(m['method'], m['kernel']): m for m in means}
    best = {(k, metric): max(cell[(method, k)][metric] for method in methods)
            for k in kernels for metric in ('ssim', 'psnr')}

    def fmt(method, kernel, metric, digits):
        value = cell[(method, kernel)][metric]
        text = f'{value:.{digits}f}'
        return f'**{text}**' if value == best[(kernel, metric)] else text

    header = ['Pooling'] + [
        f'k={k} {metric}' for k in kernels for metric in ('SSIM', 'PSNR')
    ]
    lines = [
        '| ' + ' | '.join(header) + ' |',
        '|' + '---|' * len(header),
    ]
    for method in methods:
        values = []
        for k in kernels:
            values += [fmt(method, k, 'ssim', 3), fmt(method, k, 'psnr', 2)]
        lines.append('| ' + ' | '.join([method_label(method, power, seed)] +
                                        values) + ' |')
    return '\n'.join(lines)


def main(args=None):
    args = parse_args(args)
    out_dir = Path(args.out_dir)
    for name in ('pool_similarity.csv', 'pool_similarity.json'):
        output_path(out_dir / name, '--out-dir', args.overwrite)
    if args.img_dir:
        with user_errors(FileNotFoundError, NotADirectoryError):
            sources = find_images(args.img_dir)
        names = [path.name for path in sources]
    else:
        sources = args.images or list(SAMPLE_IMAGES)
        names = [str(source) for source in sources]
    # Each image checked before the work starts, not when its turn comes (an
    # image is read twice: cheap beside pooling and SSIM at three scales).
    with user_errors(FileNotFoundError, ValueError):
        for source, name in zip(sources, names):
            check_image_size(load_image(source), name, args.kernels)
    print(f'{len(sources)} images, methods {", ".join(args.methods)}, '
          f'kernels {args.kernels}', file=sys.stderr)

    rows = []
    for source, name in track_iter_progress(
            list(zip(sources, names)), file=sys.stderr):
        rows += evaluate_image(
            load_image(source), name, args.methods, args.kernels,
            args.upsample, args.scale, args.power, args.seed)
    exact = sorted({(r['image'], r['kernel']) for r in rows
                    if r['psnr'] == math.inf})
    if exact:
        # A mean with an infinite PSNR is infinite; say which image did it.
        print('PSNR is inf (pooled and upsampled image equals the original) '
              f'for (image, kernel) {exact}: such images are likely '
              'upsampled copies; leave them out', file=sys.stderr)
    means = mean_table(rows)

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / 'pool_similarity.csv', 'w', newline='') as f:
        writer = csv.DictWriter(
            f, fieldnames=['image', 'method', 'kernel', 'ssim', 'psnr'])
        writer.writeheader()
        writer.writerows(rows)
    settings = {
        key: getattr(args, key)
        for key in ('kernels', 'methods', 'power', 'seed', 'upsample',
                    'scale')
    }
    with open(out_dir / 'pool_similarity.json', 'w') as f:
        json.dump(
            dict(
                protocol=dict(settings, description=PROTOCOL),
                images=names,
                mean=means,
                per_image=rows),
            f,
            indent=2)

    table = format_table(means, args.power, args.seed)
    print(f'Mean over {len(names)} images, upsampling {args.upsample}, '
          f'scale {args.scale:g}:')
    print(table)
    print(f'per-image results: {out_dir / "pool_similarity.csv"}, '
          f'{out_dir / "pool_similarity.json"}', file=sys.stderr)
    return means


if __name__ == '__main__':
    run_tool(main)
