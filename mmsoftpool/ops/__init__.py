from .soft_pool import (SoftPool1d, SoftPool2d, SoftPool3d, soft_pool1d,
                        soft_pool2d, soft_pool3d)

__all__ = [
    'soft_pool1d', 'soft_pool2d', 'soft_pool3d', 'SoftPool1d', 'SoftPool2d',
    'SoftPool3d'
]
