"""Swap a backbone's pooling layers for layers built from config.

The mechanism is independent of any downstream library: a backbone class
inherits :class:`PoolSwapMixin` before the library's own class and lists its
swappable pooling layers in ``pool_slots``. The library's constructor runs
unchanged; the listed modules are then replaced by ``MODELS.build(cfg)``.
SoftPool has no parameters or buffers, so the state dict keeps exactly the
keys of the original backbone and every checkpoint loads as before.
"""
import copy
import fnmatch
from typing import Dict, List, NamedTuple, Optional, Tuple, Type

from mmengine.registry import MODELS
from torch import nn

# The arguments every PyTorch pooling layer shares; a replacement that leaves
# out kernel_size takes them from the layer it replaces.
GEOMETRY_KEYS = ('kernel_size', 'stride', 'padding', 'ceil_mode')


class PoolSlot(NamedTuple):
    """Pooling layers that one config argument replaces.

    Args:
        pool_type: the class (or classes) the wrapped backbone builds there.
        pattern: ``fnmatch`` pattern over dotted module names, e.g.
            ``'maxpool'`` or ``'layer*.*.downsample.0'``.
        default: the config used when the argument is not given (for a
            site: when ``site_pool_cfg`` is not given); ``None`` keeps the
            backbone's own layers.
        hint: appended to the error raised when a config is given but no
            layer matches (e.g. which option creates those layers).
    """
    pool_type: Tuple[Type[nn.Module], ...]
    pattern: str
    default: Optional[dict] = None
    hint: str = ''


def find_pools(model: nn.Module, slot: PoolSlot) -> List[str]:
    """Dotted names of the modules of ``model`` that ``slot`` selects."""
    return [
        name for name, module in model.named_modules()
        if fnmatch.fnmatchcase(name, slot.pattern)
        and isinstance(module, slot.pool_type)
    ]


def _same_stride(a, b) -> bool:
    """Whether two pooling strides (ints or tuples) are equal."""
    a, b = (tuple(v) if isinstance(v, (tuple, list)) else (v, )
            for v in (a, b))
    dim = max(len(a), len(b))
    return (a * dim if len(a) == 1 else a) == (b * dim if len(b) == 1 else b)


def build_pool(cfg: dict, replaced: nn.Module, name: str, owner: str,
               arg: str) -> nn.Module:
    """Build the pooling layer that replaces ``replaced``.

    ``name`` (the module's dotted name), ``owner`` (the backbone class) and
    ``arg`` (the config argument) only serve the error messages.

    If ``cfg`` gives no ``kernel_size``, the kernel size, stride, padding and
    ceil mode of ``replaced`` are used (e.g. ``dict(type='SoftPool2d')`` for
    each downsample pool of ResNetV1d, whose kernel follows its stage).
    The stride must stay that of ``replaced``: the rest of the network was
    built for it.
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f'{owner}: {arg} must be a dict with a "type" key '
                        f'(e.g. dict(type="SoftPool2d")), got {arg}={cfg!r}')
    given = dict(cfg)  # as written in the config, for the messages
    cfg = copy.deepcopy(given)
    if 'kernel_size' not in cfg:
        for key in GEOMETRY_KEYS:
            if key not in cfg and hasattr(replaced, key):
                cfg[key] = getattr(replaced, key)
    pool_type = cfg['type']
    try:
        pool = MODELS.build(cfg)
    except KeyError as error:
        # Look the type up in the registry of the current default scope (e.g.
        # mmdet's, which falls back to MMEngine's), as MODELS.build does.
        with MODELS.switch_scope_and_registry(None) as registry:
            registered = (not isinstance(pool_type, str)
                          or registry.get(pool_type) is not None)
        if registered:
            raise  # a KeyError from inside a registered layer
        raise ValueError(
            f'{owner}: {arg}={given!r}: unknown pooling type '
            f'{pool_type!r}, it is not registered in MMEngine\'s MODELS '
            'registry. The SoftPool layers, SoftPool1d, SoftPool2d and '
            'SoftPool3d, are registered by '
            "custom_imports=dict(imports=['mmsoftpool'], "
            'allow_failed_imports=False) in the config.') from error

    old_stride = getattr(replaced, 'stride', None)
    new_stride = getattr(pool, 'stride', None)
    if None not in (old_stride, new_stride) and not _same_stride(
            old_stride, new_stride):
        raise ValueError(
            f'{owner}: {arg}={given!r} gives stride {new_stride}, but the '
            f'{type(replaced).__name__} it replaces at {name} has stride '
            f'{old_stride}; the replacement must keep the stride (leave out '
            "kernel_size to copy the replaced layer's kernel_size, stride, "
            'padding and ceil_mode)')
    return pool


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Set the submodule at dotted ``name`` of ``model`` to ``new``."""
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


class PoolSwapMixin:
    """Builds the backbone it is mixed into, then swaps its pooling layers.

    Usage: ``class SoftPoolResNet(PoolSwapMixin, ResNet)`` with
    ``pool_slots = {'stem_pool_cfg': PoolSlot((nn.MaxPool2d, ), 'maxpool',
    dict(type='SoftPool2d', kernel_size=2, stride=2))}``. Each key of
    ``pool_slots`` becomes a keyword argument of the constructor; the other
    arguments go to the wrapped backbone unchanged.

    A class may instead (or also) list named sites in ``pool_sites``; its
    constructor then takes ``soft_pool_sites`` (the site names to replace;
    default: all) and ``site_pool_cfg`` (the config for every chosen site;
    default: each site's ``PoolSlot.default``).
    """
    pool_slots: Dict[str, PoolSlot] = {}
    pool_sites: Dict[str, PoolSlot] = {}

    def __init__(self, *args, **kwargs):
        swaps = [(arg, slot, kwargs.pop(arg, slot.default))
                 for arg, slot in self.pool_slots.items()]
        # Only a class with sites takes the site arguments; elsewhere they
        # reach the wrapped backbone, which rejects them.
        if self.pool_sites:
            swaps += self._chosen_sites(kwargs)
        super().__init__(*args, **kwargs)
        owner = type(self).__name__
        for arg, slot, cfg in swaps:
            if cfg is None:
                continue
            names = find_pools(self, slot)
            if not names:
                kinds = '/'.join(t.__name__ for t in slot.pool_type)
                raise ValueError(
                    f'{owner}: {arg}={cfg!r}, but this backbone has no '
                    f'{kinds} named like {slot.pattern!r} to replace'
                    f'{slot.hint}')
            for name in names:
                replaced = self.get_submodule(name)
                replace_module(self, name,
                               build_pool(cfg, replaced, name, owner, arg))

    def _chosen_sites(self, kwargs: dict) -> List[Tuple[str, PoolSlot, dict]]:
        """Pop ``soft_pool_sites`` / ``site_pool_cfg`` from ``kwargs``.

        Returns ``(argument, slot, config)`` for each chosen site.
        """
        owner = type(self).__name__
        sites = kwargs.pop('soft_pool_sites', tuple(self.pool_sites))
        # A single string is refused, not read as a list of letters.
        if not (isinstance(sites, (list, tuple))
                and all(isinstance(site, str) for site in sites)):
            raise TypeError(
                f'{owner}: soft_pool_sites must be a list of site names, '
                f'got soft_pool_sites={sites!r}')
        unknown = [site for site in sites if site not in self.pool_sites]
        if unknown:
            raise ValueError(
                f'{owner}: soft_pool_sites={sites!r} names unknown sites '
                f'{unknown}; the sites are {list(self.pool_sites)}')
        repeated = sorted({site for site in sites if sites.count(site) > 1})
        if repeated:
            raise ValueError(
                f'{owner}: soft_pool_sites={sites!r} repeats {repeated}')
        taken = [site for site in self.pool_sites if site in kwargs]
        if taken:
            raise TypeError(
                f'{owner}: choose sites with soft_pool_sites, not with the '
                f'keyword arguments {taken}')
        if 'site_pool_cfg' in kwargs and kwargs['site_pool_cfg'] is None:
            raise ValueError(
                f'{owner}: site_pool_cfg=None; to keep the original pools, '
                'list fewer soft_pool_sites (an empty list keeps them all)')
        cfg = kwargs.pop('site_pool_cfg', None)
        return [('site_pool_cfg', self.pool_sites[site],
                 self.pool_sites[site].default if cfg is None else cfg)
                for site in sites]
