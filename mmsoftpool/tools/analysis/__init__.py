"""Helpers shared by the pooling analysis tools in ``tools/analysis_tools/``."""
from .images import SAMPLE_IMAGES, find_images, image_to_tensor, load_image
from .pooling import METHODS, method_label, pool, pool_at_scale, stochastic_pool

__all__ = [
    'SAMPLE_IMAGES', 'find_images', 'image_to_tensor', 'load_image', 'METHODS',
    'method_label', 'pool', 'pool_at_scale', 'stochastic_pool'
]
