"""Pictures of what pooling keeps: original, max, average and SoftPool side by side.

2-D (an image, ``--kernel K`` or ``--kernel KH KW``): the top row shows
the whole images, the bottom row a zoomed-in region (the paper's Figures 3
and 5). Each pooled pixel is drawn over the window it summarises, so all
panels share the original's coordinates.

3-D (``--kernel KT KH KW``): a clip pooled in time and space; rows are the
methods, columns the pooled time steps. The clip is a folder of frames, or
is built from one photograph as a camera pan (``--frames`` crops, each
``--pan`` pixels to the right of the previous one).

Examples::

    python tools/analysis_tools/visualize_pooling.py astronaut --kernel 3
    python tools/analysis_tools/visualize_pooling.py photo.jpg --kernel 2 --zoom 100 40 64 64
    python tools/analysis_tools/visualize_pooling.py coffee --kernel 2 4 4 --frames 8
    python tools/analysis_tools/visualize_pooling.py frames/ --kernel 2 2 2

An existing ``--out`` file is replaced only with ``--overwrite``.
"""
import argparse
import math
import sys
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

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
    int_at_least,
    output_path,
    positive_int,
    run_tool,
    user_errors,
)

DPI = 100


def parse_args(args=None):
    parser = ToolParser(
        description='Draw an image (or clip) and its max-, average- and '
        'SoftPool-pooled versions in one PNG.',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument(
        'img',
        help='image file, scikit-image sample name '
        f'({", ".join(SAMPLE_IMAGES)}), or folder of video frames (3-D)')
    parser.add_argument(
        '--kernel',
        type=int,
        nargs='+',
        default=[2],
        help='K or KH KW: 2-D pooling of an image; KT KH KW: 3-D pooling '
        'of a clip')
    parser.add_argument(
        '--stride',
        type=int,
        nargs='+',
        help='as many values as --kernel (default: the kernel)')
    parser.add_argument(
        '--methods',
        nargs='+',
        choices=METHODS,
        default=['max', 'avg', 'softpool'],
        help='pooling methods drawn after the original')
    parser.add_argument(
        '--zoom',
        type=int,
        nargs=4,
        metavar=('X', 'Y', 'W', 'H'),
        help='2-D: region of the original to zoom into, in pixels '
        '(default: the square of a quarter of the image side where max and '
        'average pooling differ most)')
    parser.add_argument(
        '--frames',
        type=positive_int,
        default=8,
        help='3-D: number of frames (the first ones of a folder)')
    parser.add_argument(
        '--pan',
        type=int_at_least(0),
        default=16,
        help='3-D clip from a photograph: pixels the view moves per frame')
    parser.add_argument(
        '--scale',
        type=float,
        default=1.0,
        help='activation = pixel value in [0, 1] times scale (only '
        'SoftPool depends on it)')
    parser.add_argument(
        '--power', type=float, default=2.0, help='p of power-average')
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of stochastic pooling')
    parser.add_argument(
        '--panel-size',
        type=int,
        default=256,
        help='size of each panel in pixels')
    parser.add_argument(
        '--out',
        help='PNG file to write (default: work_dirs/visualize_pooling/'
        '<img>_k<kernel>.png)')
    add_overwrite_arg(parser)
    args = parser.parse_args(args)
    if len(args.kernel) not in (1, 2, 3):
        parser.error('--kernel takes 1 or 2 values (2-D) or 3 values (3-D), '
                     f'got {args.kernel}')
    if args.stride is not None and len(args.stride) != len(args.kernel):
        parser.error(f'--stride {args.stride} must have as many values as '
                     f'--kernel {args.kernel}')
    if any(v < 1 for v in args.kernel + (args.stride or [])):
        parser.error(f'--kernel and --stride must be positive, got '
                     f'--kernel {args.kernel} --stride {args.stride}')
    if not (math.isfinite(args.scale) and args.scale > 0):
        parser.error(f'--scale must be positive and finite, got {args.scale}')
    if not (math.isfinite(args.power) and args.power >= 1):
        parser.error(f'--power must be finite and >= 1, got {args.power}')
    if args.panel_size < 32:
        parser.error(f'--panel-size must be at least 32, got '
                     f'{args.panel_size}')
    is_3d = len(args.kernel) == 3
    if Path(args.img).is_dir() and not is_3d:
        parser.error(f'{args.img!r} is a folder of frames: give a 3-D '
                     '--kernel KT KH KW')
    if args.zoom is not None and is_3d:
        parser.error('--zoom is for 2-D pooling only')
    if is_3d and args.frames < args.kernel[0]:
        parser.error(f'--frames ({args.frames}) must be at least the temporal '
                     f'kernel ({args.kernel[0]})')
    return args


def check_geometry(kernel, zoom, shape) -> None:
    """The kernel fits the (T,) H, W of the input, the zoom lies inside."""
    height, width = shape[-2:]
    if kernel[-2] > height or kernel[-1] > width:
        raise ValueError(f'--kernel {" ".join(map(str, kernel))} does not fit '
                         f'in the {width}x{height} input')
    if zoom is None:
        return
    zx, zy, zw, zh = zoom
    if zw < 1 or zh < 1 or zx < 0 or zy < 0 or zx + zw > width or \
            zy + zh > height:
        raise ValueError(f'--zoom {zx} {zy} {zw} {zh} must be a non-empty '
                         f'region inside the {width}x{height} image')


def pooled_extent(kernel: Sequence[int], stride: Sequence[int],
                  out_hw: Sequence[int]) -> Tuple[float, ...]:
    """imshow extent that draws each output over the window it summarises.

    Output j is centred on its window (j*s + k/2 in pixel-edge coordinates)
    and drawn s wide, so outputs tile the image when k != s too.
    """
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw
    left, top = (kw - sw) / 2, (kh - sh) / 2
    return (left, left + ow * sw, top + oh * sh, top)


def show(ax, image: np.ndarray, extent, title: str, fontsize: float) -> None:
    """Draw an (H, W, C) image in [0, 1] without axes."""
    # Pooled values lie in the input's range; clip only float rounding.
    image = np.clip(image, 0, 1)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap='gray', vmin=0, vmax=1,
                  extent=extent, interpolation='nearest')
    else:
        ax.imshow(image, extent=extent, interpolation='nearest')
    ax.set_title(title, fontsize=fontsize)
    ax.set_axis_off()


def title_size(panel_size: int) -> float:
    """Font size in points that keeps two-line titles inside a panel."""
    return min(8.0, max(5.0, panel_size / 28))


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """(C, H, W) tensor -> (H, W, C) array."""
    return tensor.permute(1, 2, 0).numpy()


def pool_all(x: torch.Tensor, methods: Sequence[str], kernel, stride,
             args) -> dict:
    """Every method's output for one input, pooled at activation scale."""
    return {
        method: pool_at_scale(
            x,
            method,
            kernel,
            stride,
            scale=args.scale,
            power=args.power,
            seed=args.seed)
        for method in methods
    }


def auto_zoom(x: torch.Tensor, kernel, stride) -> Tuple[int, int, int, int]:
    """The square (a quarter of the shorter side) where max and average
    pooling differ most: where the choice of method shows."""
    height, width = x.shape[-2:]
    side = min(max(min(height, width) // 4, 2 * max(kernel)),
               min(height, width))
    diff = (F.max_pool2d(x, kernel, stride) -
            F.avg_pool2d(x, kernel, stride)).sum(1, keepdim=True)
    # Sum the difference over every side x side square (in output pixels).
    box = (max(1, min(side // stride[0], diff.shape[-2])),
           max(1, min(side // stride[1], diff.shape[-1])))
    score = F.avg_pool2d(diff, box, stride=1)[0, 0]
    row, col = divmod(int(score.argmax()), score.shape[-1])
    return (min(col * stride[1], width - side), min(row * stride[0],
                                                   height - side), side, side)


def figure_2d(image: np.ndarray, kernel, stride, zoom, args) -> Figure:
    """Top row: whole images; bottom row: the zoomed-in region."""
    x = image_to_tensor(image)
    height, width = image.shape[:2]
    if zoom is None:
        zoom = auto_zoom(x, kernel, stride)
    zx, zy, zw, zh = zoom
    pooled = pool_all(x, args.methods, kernel, stride, args)
    panels = [('Original', image, (0, width, height, 0))]
    for method, out in pooled.items():
        panels.append((f'{method_label(method, args.power, args.seed)}\n'
                       f'k {kernel[0]}x{kernel[1]}, s {stride[0]}x{stride[1]}'
                       f' -> {out.shape[-1]}x{out.shape[-2]}',
                       to_image(out[0]),
                       pooled_extent(kernel, stride, out.shape[-2:])))

    size = args.panel_size / DPI
    fig = Figure(figsize=(size * len(panels), size * 2), dpi=DPI,
                 layout='constrained')
    axes = fig.subplots(2, len(panels), squeeze=False)
    fontsize = title_size(args.panel_size)
    for i, ((title, panel, extent), top, bottom) in enumerate(
            zip(panels, *axes)):
        show(top, panel, extent, title, fontsize)
        top.add_patch(Rectangle((zx, zy), zw, zh, fill=False,
                                edgecolor='yellow', linewidth=1.2))
        show(bottom, panel, extent,
             f'zoom {zw}x{zh} at ({zx}, {zy})' if i == 0 else 'zoom',
             fontsize)
        bottom.set_xlim(zx, zx + zw)
        bottom.set_ylim(zy + zh, zy)
    return fig


def figure_3d(clip: torch.Tensor, kernel, stride, args) -> Figure:
    """Rows: original then each method; columns: pooled time steps.

    The original row shows the first frame of each temporal window.
    """
    pooled = pool_all(clip, args.methods, kernel, stride, args)
    steps = next(iter(pooled.values())).shape[2]
    height, width = clip.shape[-2:]
    rows = [('Original', [(f'frame {t * stride[0]}',
                           to_image(clip[0, :, t * stride[0]]))
                          for t in range(steps)], (0, width, height, 0))]
    for method, out in pooled.items():
        first = [t * stride[0] for t in range(steps)]
        rows.append((method_label(method, args.power, args.seed),
                     [(f'frames {f}-{f + kernel[0] - 1}', to_image(out[0, :, t]))
                      for t, f in enumerate(first)],
                     pooled_extent(kernel[1:], stride[1:], out.shape[-2:])))

    size = args.panel_size / DPI
    fig = Figure(figsize=(size * steps, size * len(rows)), dpi=DPI,
                 layout='constrained')
    axes = fig.subplots(len(rows), steps, squeeze=False)
    fontsize = title_size(args.panel_size)
    for (name, frames, extent), row_axes in zip(rows, axes):
        for (when, frame), ax in zip(frames, row_axes):
            show(ax, frame, extent, f'{name}\n{when}', fontsize)
    fig.suptitle(f'k {"x".join(map(str, kernel))}, '
                 f's {"x".join(map(str, stride))} (t x h x w)',
                 fontsize=fontsize + 1)
    return fig


def pan_clip(image: np.ndarray, frames: int, pan: int) -> np.ndarray:
    """(T, H, W', C) clip: crops moving ``pan`` pixels right per frame."""
    width = image.shape[1] - (frames - 1) * pan
    if width < 16:
        raise ValueError(f'--frames {frames} with --pan {pan} leaves crops '
                         f'{width} px wide from an image {image.shape[1]} px '
                         'wide; use fewer frames or a smaller pan')
    return np.stack([image[:, t * pan:t * pan + width] for t in range(frames)])


def load_clip(source: str, frames: int, pan: int) -> np.ndarray:
    """(T, H, W, C) clip from a folder of frames or a photograph."""
    if not Path(source).is_dir():
        return pan_clip(load_image(source), frames, pan)
    paths = find_images(source)
    if len(paths) < frames:
        raise ValueError(f'folder {source!r} has {len(paths)} frames, fewer '
                         f'than --frames {frames}')
    if len(paths) > frames:
        print(f'using the first {frames} of {len(paths)} frames in '
              f'{source!r} (--frames)', file=sys.stderr)
    clip = [load_image(path) for path in paths[:frames]]
    shapes = {frame.shape for frame in clip}
    if len(shapes) > 1:
        raise ValueError(f'frames in {source!r} differ in shape: {shapes}')
    return np.stack(clip)


def main(args=None):
    args = parse_args(args)
    kernel = tuple(args.kernel * (2 if len(args.kernel) == 1 else 1))
    stride = tuple(args.stride * (2 if len(args.stride) == 1 else 1)
                   ) if args.stride else kernel
    out = Path(args.out or 'work_dirs/visualize_pooling/'
               f'{Path(args.img).stem}_k{"x".join(map(str, kernel))}.png')
    output_path(out, '--out', args.overwrite)
    # what the user named: missing, not an image, too small for the kernel
    with user_errors(FileNotFoundError, ValueError):
        data = load_image(args.img) if len(kernel) == 2 else load_clip(
            args.img, args.frames, args.pan)
        check_geometry(kernel, args.zoom, data.shape[:-1])
    if len(kernel) == 2:
        fig = figure_2d(data, kernel, stride, args.zoom, args)
    else:
        # (T, H, W, C) -> (1, C, T, H, W): each channel an activation map
        fig = figure_3d(
            torch.from_numpy(data).permute(3, 0, 1, 2).unsqueeze(0), kernel,
            stride, args)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    print(f'wrote {out}')
    return out


if __name__ == '__main__':
    run_tool(main)
