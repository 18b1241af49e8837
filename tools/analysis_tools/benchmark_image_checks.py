"""Time the image checks of the data pre-flight check (docs/checkpoints.md).

    python tools/analysis_tools/benchmark_image_checks.py [--images 1000]

Writes that many random 640x480 JPEG files (COCO's typical size) to a
temporary folder, then runs the default check and ``--check-images full``
twice each (the second full run reads the cache of decoded images).
"""
import os
import tempfile
import time

import numpy as np
from PIL import Image

from mmsoftpool.tools.data_checks import check_images
from mmsoftpool.tools.launch import ToolParser, positive_int, run_tool


def main():
    parser = ToolParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=positive_int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        os.environ['XDG_CACHE_HOME'] = os.path.join(folder, 'cache')
        rng = np.random.default_rng(0)
        images = []
        for index in range(args.images):
            pixels = (rng.random((480, 640, 3)) * 255).astype(np.uint8)
            name = f'{index:06d}.jpg'
            Image.fromarray(pixels).save(os.path.join(folder, name), quality=90)
            images.append(dict(id=index, file_name=name, width=640, height=480))
        coco = dict(images=images)
        for mode in ('header', 'header', 'full', 'full'):
            start = time.perf_counter()
            check_images(coco, folder, 'benchmark', 'generated', mode)
            seconds = time.perf_counter() - start
            print(f'{mode:6s} {seconds:.3f} s for {args.images} images, '
                  f'{seconds / args.images * 1e3:.3f} ms an image')


if __name__ == '__main__':
    run_tool(main)
