"""Loading images for the analysis tools as float arrays in [0, 1]."""
from pathlib import Path
from typing import List, Union

import numpy as np
import skimage.data
import skimage.io
import torch
from skimage.util import img_as_float

# The photographs bundled in scikit-image's wheel (no download needed).
# Left out: the synthetic pictures (horse, logo, colorwheel, checkerboard)
# and moon, whose every 2x2 block is constant (it was upsampled by 2), so any
# pooling with k=2 returns it exactly.
SAMPLE_IMAGES = ('astronaut', 'brick', 'camera', 'cat', 'cell', 'clock',
                 'coffee', 'coins', 'grass', 'gravel', 'hubble_deep_field',
                 'immunohistochemistry', 'microaneurysms', 'page', 'retina',
                 'rocket', 'text')

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def load_image(source: Union[str, Path]) -> np.ndarray:
    """An image as float64 (H, W, C) in [0, 1], C in {1, 3, 4}.

    ``source`` is a file path or the name of a scikit-image sample
    (``skimage.data.<name>()``, e.g. ``astronaut``).
    """
    path = Path(source)
    if path.is_file():
        try:
            image = skimage.io.imread(path)
        except Exception as err:  # each format's reader fails its own way
            raise ValueError(f'image {str(source)!r} cannot be read '
                             f'({type(err).__name__}: {err})') from None
    elif str(source) in SAMPLE_IMAGES:
        image = getattr(skimage.data, str(source))()
    else:
        raise FileNotFoundError(
            f'image {str(source)!r} is neither a file nor a scikit-image '
            f'sample name (one of {", ".join(SAMPLE_IMAGES)})')
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f'image {str(source)!r} must be (H, W) or (H, W, C) '
                         f'with C in 1, 3, 4, got shape {image.shape}')
    image = img_as_float(image).astype(np.float64)
    # img_as_float maps integer images to [0, 1] but keeps floats as they are.
    if image.min() < 0 or image.max() > 1:
        raise ValueError(f'image {str(source)!r} is float with values in '
                         f'[{image.min():g}, {image.max():g}]; expected [0, 1]')
    return image


def find_images(folder: Union[str, Path]) -> List[Path]:
    """The image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f'image folder {str(folder)!r} is not a '
                                 'directory')
    paths = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(
            f'image folder {str(folder)!r} holds no files ending in '
            f'{", ".join(IMAGE_SUFFIXES)}')
    return paths


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) array -> (1, C, H, W) tensor: each channel an activation map."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(
        2, 0, 1))).unsqueeze(0)
