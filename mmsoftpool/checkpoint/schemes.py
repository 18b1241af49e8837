"""What MMEngine calls to load a checkpoint, each ending in :func:`load`.

A loader with ``weights_only=True`` for every scheme of MMEngine's
``CheckpointLoader`` (local paths, ``http(s)://``, ``torchvision://``,
``open-mmlab://``, ``mmcls://``, ``pavi://``, ``s3://`` ...), which the
package registers when imported. MMEngine's own loaders for URLs end in
torch.hub's ``load_state_dict_from_url``, whose ``weights_only`` default is
``False``, and the others call ``torch.load`` with its default, which
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns off. An explicit
``weights_only=True`` cannot be turned off by any environment variable.

Also the check the package puts on ``BaseInferencer._init_model``: a model
is never built from a config stored in a checkpoint.
"""
import functools
import io
import logging
import os
import os.path as osp
from collections import OrderedDict
from tempfile import TemporaryDirectory
from urllib.parse import urlparse

import torch
from mmengine.dist import get_dist_info
from mmengine.fileio import get_file_backend
from mmengine.logging import print_log
from mmengine.runner.checkpoint import (
    _get_mmengine_home,
    _process_mmcls_checkpoint,
    get_deprecated_model_names,
    get_external_models,
    get_mmcls_models,
    get_torchvision_models,
)

from .loading import RefusedCheckpoint, load

# ---------------------------------------------------------------------------
# A loader for every scheme MMEngine 0.10.7's CheckpointLoader registers, as
# MMEngine's (same prefixes, same name tables), each ending in load().


def load_from_local(filename, map_location=None):
    """Scheme '' (local paths)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename!r} does not exist')
    return load(filename, map_location=map_location)


def _cached_download(url, model_dir, progress):
    """The file torch.hub's load_state_dict_from_url would load: the cached
    copy under ``$TORCH_HOME/hub/checkpoints``, downloaded if absent."""
    if model_dir is None:
        model_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached_file = osp.join(model_dir, osp.basename(urlparse(url).path))
    if not osp.exists(cached_file):
        print_log(f'Downloading {url} to {cached_file}', logger='current')
        try:
            torch.hub.download_url_to_file(url, cached_file, progress=progress)
        except OSError as err:  # urllib's URLError, HTTPError, a timeout
            # FileNotFoundError: one of CHECKPOINT_ERRORS, for the tools
            raise FileNotFoundError(
                f'cannot download checkpoint {url!r}: '
                f'{getattr(err, "reason", None) or err}') from None
    return cached_file


def load_from_http(filename, map_location=None, model_dir=None,
                   progress=os.isatty(0)):
    """Schemes ``http://``, ``https://``; local rank 0 downloads first."""

    def fetch():
        cached_file = _cached_download(filename, model_dir, progress)
        return load(cached_file, f'{filename} (cached as {cached_file})',
                    map_location)

    rank, world_size = get_dist_info()
    if rank == 0:
        checkpoint = fetch()
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = fetch()
    return checkpoint


def _model_url(table, scheme, model_name):
    if model_name not in table:
        raise FileNotFoundError(  # one of CHECKPOINT_ERRORS, for the tools
            f'{scheme}{model_name}: no such model in MMEngine\'s table for '
            f'{scheme} (known: {len(table)} names, e.g. {sorted(table)[:5]})')
    return table[model_name]


def load_from_torchvision(filename, map_location=None):
    """Schemes ``torchvision://``, ``modelzoo://`` (deprecated)."""
    scheme, model_name = filename.split('://', 1)
    if scheme == 'modelzoo':
        print_log('The URL scheme of "modelzoo://" is deprecated, please use '
                  '"torchvision://" instead', logger='current',
                  level=logging.WARNING)
    url = _model_url(get_torchvision_models(), f'{scheme}://', model_name)
    return load_from_http(url, map_location=map_location)


def load_from_openmmlab(filename, map_location=None):
    """Schemes ``open-mmlab://``, ``openmmlab://``."""
    scheme, model_name = filename.split('://', 1)
    deprecated = get_deprecated_model_names()
    if model_name in deprecated:
        print_log(f'{scheme}://{model_name} is deprecated in favor of '
                  f'{scheme}://{deprecated[model_name]}', logger='current',
                  level=logging.WARNING)
        model_name = deprecated[model_name]
    url = _model_url(get_external_models(), f'{scheme}://', model_name)
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location=map_location)
    return load_from_local(
        osp.join(_get_mmengine_home(), url), map_location=map_location)


def load_from_mmcls(filename, map_location=None):
    """Scheme ``mmcls://``."""
    url = _model_url(get_mmcls_models(), 'mmcls://', filename[len('mmcls://'):])
    return _process_mmcls_checkpoint(
        load_from_http(url, map_location=map_location))


def load_from_pavi(filename, map_location=None):
    """Scheme ``pavi://``."""
    try:
        from pavi import modelcloud
    except ImportError:
        raise ImportError(
            'Please install pavi to load checkpoint from modelcloud.')
    model = modelcloud.get(filename[len('pavi://'):])
    with TemporaryDirectory() as tmp_dir:
        downloaded_file = osp.join(tmp_dir, model.name)
        model.download(downloaded_file)
        return load(downloaded_file, filename, map_location)


def load_from_ceph(filename, map_location=None, backend='petrel'):
    """Schemes ``s3://``, ``petrel://`` (optionally ``name:s3://``)."""
    file_backend = get_file_backend(
        filename, backend_args={'backend': backend})
    with io.BytesIO(file_backend.get(filename)) as buffer:
        return load(buffer, filename, map_location)


def load_from_work_dir(filename, map_location=None):
    """Scheme ``work_dir://FOLDER``: the newest whole checkpoint a training
    run wrote to FOLDER (what ``last_checkpoint`` names, or the one before a
    damaged one), so one run can start from another's result without
    naming its last epoch."""
    from mmsoftpool.engine.resume import find_resumable_checkpoint
    folder = filename[len('work_dir://'):]
    found = find_resumable_checkpoint(folder)
    for damaged, reason in found.skipped:
        print_log(f'{filename}: skipping damaged checkpoint {damaged!r}: '
                  f'{reason}', logger='current', level=logging.WARNING)
    if found.path is None:
        raise FileNotFoundError(
            f'{filename}: {found.reason}; run the training that writes it '
            'first')
    print_log(f'{filename}: {found.describe()}', logger='current')
    path = found.path
    return load_from_local(path, map_location=map_location)


SCHEMES = OrderedDict([
    ('', load_from_local),
    (('http://', 'https://'), load_from_http),
    (('modelzoo://', 'torchvision://'), load_from_torchvision),
    (('open-mmlab://', 'openmmlab://'), load_from_openmmlab),
    ('mmcls://', load_from_mmcls),
    ('pavi://', load_from_pavi),
    ((r'(\S+\:)?s3://', r'(\S+\:)?petrel://'), load_from_ceph),
    ('work_dir://', load_from_work_dir),
])


# ---------------------------------------------------------------------------
# MMEngine's inferencers.


def _no_config_from_checkpoint(init_model):
    """MMEngine's ``BaseInferencer`` without a config (``DetInferencer(
    model=None, weights=FILE)``) builds one from the checkpoint's
    ``message_hub.runtime_info.cfg`` with ``Config.fromstring``, which runs
    it as Python: code from the file. Refuse that; the config comes from
    the user."""

    @functools.wraps(init_model)
    def checked(self, cfg, weights, device='cpu'):
        if not cfg and weights is not None:
            raise RefusedCheckpoint(
                f'{type(self).__name__}(model=None, weights={weights!r}): '
                'building the model from the config stored in a checkpoint '
                'runs that config as Python (MMEngine\'s Config.fromstring); '
                'pass the config file as model= (see docs/checkpoints.md)')
        return init_model(self, cfg, weights, device)

    return checked
