"""The pooling layers a config may replace, per backbone family.

One catalogue per architecture, shared by every library that ships it
(MMDetection's and MMPretrain's ResNets build the same module names). Each
entry is a :class:`~.pool_swap.PoolSlot` read by
:class:`~.pool_swap.PoolSwapMixin`.
"""
from torch import nn

from .pool_swap import PoolSlot

# The paper's replacement of a 3x3, stride-2 stem max-pool: a 2x2, stride-2
# SoftPool (same output size on even inputs), as in the authors' ResNet and
# DenseNet.
STEM_SOFTPOOL = dict(type='SoftPool2d', kernel_size=2, stride=2)
# Without kernel_size, the replacement copies the kernel size, stride,
# padding and ceil mode of each layer it replaces.
SAME_GEOMETRY_SOFTPOOL = dict(type='SoftPool2d')

RESNET_POOL_SLOTS = {
    'stem_pool_cfg':
    PoolSlot((nn.MaxPool2d, ), 'maxpool', STEM_SOFTPOOL),
    # The average pool that starts each avg_down shortcut (ResNetV1d). Not
    # swapped by default; a type alone keeps each stage's kernel and stride.
    'down_pool_cfg':
    PoolSlot((nn.AvgPool2d, ),
             'layer*.*.downsample.0',
             hint=' (such pools exist only with avg_down=True, as in '
             'ResNetV1d)'),
}

DENSENET_POOL_SLOTS = {
    'stem_pool_cfg':
    PoolSlot((nn.MaxPool2d, ), 'stem.3', STEM_SOFTPOOL),
    # The 2x2, stride-2 average pools between dense blocks (three of them);
    # the last "transition" is only a norm and an activation.
    'transition_pool_cfg':
    PoolSlot((nn.AvgPool2d, ), 'transitions.*.pool', SAME_GEOMETRY_SOFTPOOL),
}


def _site(pool_type: type, pattern: str) -> PoolSlot:
    """A site whose pools become SoftPool of the same geometry by default."""
    return PoolSlot((pool_type, ), pattern, SAME_GEOMETRY_SOFTPOOL)


# The pooling sites of the paper's Table 6 and the layers of MMPretrain's
# InceptionV3 each one covers. Every pool of that backbone is a module (none
# is a functional call in 1.2.0): maxpool1/2 of the stem, the 3x3 stride-1
# average pool (``branch_pool_downsample``) of each InceptionA/C/E block and
# the 3x3 stride-2 max-pool (``branch_pool``) of InceptionB/D. The backbone
# has Mixed_7b and Mixed_7c only: the paper's "mixed_7b-d" covers those two.
# Neither the auxiliary head's 5x5 average pool nor the global average pool
# is a site.
INCEPTION_V3_POOL_SITES = {
    'pool_1': _site(nn.MaxPool2d, 'maxpool1'),
    'pool_2': _site(nn.MaxPool2d, 'maxpool2'),
    'mixed_5b-d': _site(nn.AvgPool2d, 'Mixed_5[bcd].branch_pool_downsample'),
    'mixed_6a': _site(nn.MaxPool2d, 'Mixed_6a.branch_pool'),
    'mixed_6b-e': _site(nn.AvgPool2d, 'Mixed_6[bcde].branch_pool_downsample'),
    'mixed_7a': _site(nn.MaxPool2d, 'Mixed_7a.branch_pool'),
    'mixed_7b-d': _site(nn.AvgPool2d, 'Mixed_7[bc].branch_pool_downsample'),
}


# MMAction2's 3-D ResNets (ResNet3d: I3D, C3D-style R3D; ResNet3dSlowOnly;
# ResNet2Plus1d): the stem max-pool ``maxpool`` (1x3x3, stride
# (pool1_stride_t, 2, 2), padding (0, 1, 1)) and the temporal max-pool
# ``pool2`` after the first stage (2x1x1, stride 2 along time; built by every
# ResNet3d, used in forward only with ``with_pool2=True``, never by
# ResNet2Plus1d). The paper's video networks replace every pool with SoftPool
# of the same geometry (Section 5), the default here.
SAME_GEOMETRY_SOFTPOOL3D = dict(type='SoftPool3d')

RESNET3D_POOL_SLOTS = {
    'stem_pool_cfg': PoolSlot((nn.MaxPool3d, ), 'maxpool', SAME_GEOMETRY_SOFTPOOL3D),
    'temporal_pool_cfg': PoolSlot((nn.MaxPool3d, ), 'pool2', SAME_GEOMETRY_SOFTPOOL3D),
}
