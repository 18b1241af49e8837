"""Safe loading as an attacker tries it: every CheckpointLoader scheme,
forged numpy objects, forged HistoryBuffer state, the conversion tool.

Risky loads run in a fresh interpreter (a SIGSEGV there fails the test
instead of killing pytest), with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 so that
the environment variable is shown not to turn safe loading off. URL schemes
load from torch.hub's cache (no network); pavi and petrel get stand-in
client modules that hand out the prepared file.
"""
import copyreg
import json
import os
import os.path as osp
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader, load_checkpoint
from mmengine.runner.checkpoint import get_external_models, get_mmcls_models, get_torchvision_models

import mmsoftpool.checkpoint as safe
from helpers import run_python
from test_checkpoint import Payload, ToyDetector, make_runner

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# MMEngine 0.10.7 registers these prefixes (mmengine/runner/checkpoint.py).
MMENGINE_SCHEMES = {
    '', 'http://', 'https://', 'modelzoo://', 'torchvision://',
    'open-mmlab://', 'openmmlab://', 'mmcls://', 'pavi://',
    r'(\S+\:)?s3://', r'(\S+\:)?petrel://'
}


def test_every_scheme_has_a_safe_loader():
    # work_dir:// is the project's own (the newest checkpoint of a run)
    assert set(CheckpointLoader._schemes) == MMENGINE_SCHEMES | {'work_dir://'}
    for prefix, loader in CheckpointLoader._schemes.items():
        assert loader.__module__ == 'mmsoftpool.checkpoint.schemes', prefix


def _first_http(table):
    return next(name for name, url in table.items()
                if url.startswith(('http://', 'https://')))


# name of the case -> (checkpoint path to load, file it resolves to: a path
# relative to $TORCH_HOME/hub/checkpoints, or an absolute one)
def scheme_cases(home):
    url_file = lambda url: osp.basename(url)  # noqa: E731
    tv = get_torchvision_models()['resnet18']
    mmlab = _first_http(get_external_models())
    mmcls = _first_http(get_mmcls_models())
    return {
        'http': ('http://example.com/models/evil.pth', 'evil.pth'),
        'https': ('https://example.com/models/evil2.pth', 'evil2.pth'),
        'torchvision': ('torchvision://resnet18', url_file(tv)),
        'modelzoo': ('modelzoo://resnet18', url_file(tv)),
        'open-mmlab': (f'open-mmlab://{mmlab}',
                       url_file(get_external_models()[mmlab])),
        'openmmlab': (f'openmmlab://{mmlab}',
                      url_file(get_external_models()[mmlab])),
        'open-mmlab-local': ('open-mmlab://local_evil',
                             osp.join(home, 'mmengine', 'local_evil.pth')),
        'mmcls': (f'mmcls://{mmcls}', url_file(get_mmcls_models()[mmcls])),
        'pavi': ('pavi://project/evil.pth', osp.join(home, 'pavi.pth')),
        's3': ('s3://bucket/evil.pth', osp.join(home, 'ceph.pth')),
        'petrel': ('cluster:petrel://bucket/evil.pth',
                   osp.join(home, 'ceph.pth')),
        'local': (osp.join(home, 'local.pth'), osp.join(home, 'local.pth')),
        'work_dir': (f'work_dir://{osp.join(home, "run")}',
                     osp.join(home, 'run', 'epoch_1.pth')),
    }


# Stand-ins for the pavi and petrel clients: they return the prepared file.
FAKE_CLIENTS = {
    'pavi/__init__.py': '',
    'pavi/modelcloud.py': '''
        import os, shutil

        class _Model:
            name = 'model.pth'

            def download(self, path):
                shutil.copy(os.environ['FAKE_PAVI_FILE'], path)

        def get(path):
            return _Model()
    ''',
    'petrel_client/__init__.py': '',
    'petrel_client/client.py': '''
        import os

        class Client:
            def __init__(self, *args, **kwargs):
                pass

            def Get(self, path):
                with open(os.environ['FAKE_PETREL_FILE'], 'rb') as f:
                    return f.read()
    ''',
}


def prepare_home(home, make_file):
    """$TORCH_HOME, $MMENGINE_HOME and the fake clients under ``home``, each
    scheme's file made by ``make_file(path)``."""
    hub = osp.join(home, 'torch', 'hub', 'checkpoints')
    os.makedirs(hub, exist_ok=True)
    os.makedirs(osp.join(home, 'mmengine'), exist_ok=True)
    with open(osp.join(home, 'mmengine', 'open_mmlab.json'), 'w') as f:
        json.dump({'local_evil': 'local_evil.pth'}, f)
    for name, text in FAKE_CLIENTS.items():
        path = osp.join(home, 'clients', name)
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(textwrap.dedent(text))
    cases = scheme_cases(home)
    for _, target in cases.values():
        make_file(target if osp.isabs(target) else osp.join(hub, target))
    env = dict(
        os.environ,
        TORCH_HOME=osp.join(home, 'torch'),
        MMENGINE_HOME=osp.join(home, 'mmengine'),
        PYTHONPATH=os.pathsep.join(
            [osp.join(home, 'clients'),
             os.environ.get('PYTHONPATH', '')]),
        FAKE_PAVI_FILE=osp.join(home, 'pavi.pth'),
        FAKE_PETREL_FILE=osp.join(home, 'ceph.pth'),
        TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')
    return cases, env


def run_isolated(code, env=None):
    return run_python(code, cwd=REPO, env=env).stdout


LOAD_EACH = '''
    import json, sys
    import mmsoftpool
    from mmengine.runner import CheckpointLoader, load_checkpoint
    import torch.nn as nn
    outcome = {}
    for case, path in json.loads(%r).items():
        try:
            if %r == 'load_checkpoint':
                load_checkpoint(nn.Linear(2, 2), path, strict=False)
            else:
                CheckpointLoader.load_checkpoint(path)
            outcome[case] = 'loaded'
        except Exception as err:
            outcome[case] = f'{type(err).__name__}: {err}'
    print(json.dumps(outcome))
'''


@pytest.fixture(scope='module', params=['load_checkpoint', 'CheckpointLoader'])
def payload_outcomes(request, tmp_path_factory):
    home = str(tmp_path_factory.mktemp('attack'))
    markers = osp.join(home, 'markers')
    os.makedirs(markers)

    def evil(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
        marker = osp.join(markers, osp.basename(path))
        torch.save({'state_dict': nn.Linear(2, 2).state_dict(),
                    'meta': Payload(os.system, f'touch {marker}')}, path)

    cases, env = prepare_home(home, evil)
    paths = {case: path for case, (path, _) in cases.items()}
    out = run_isolated(LOAD_EACH % (json.dumps(paths), request.param), env)
    return json.loads(out.splitlines()[-1]), cases, markers


@pytest.mark.parametrize('case', list(scheme_cases('/h')))
def test_payload_in_every_scheme_is_refused(payload_outcomes, case):
    outcomes, cases, markers = payload_outcomes
    assert outcomes[case].startswith(
        'RefusedCheckpoint: Refused to load checkpoint '), outcomes[case]
    assert 'nothing in it was executed' in outcomes[case]
    assert os.listdir(markers) == []


def test_url_errors_name_the_url_and_the_cached_file(payload_outcomes):
    outcomes, cases, _ = payload_outcomes
    assert ("Refused to load checkpoint 'http://example.com/models/evil.pth "
            '(cached as ') in outcomes['http']
    assert ("Refused to load checkpoint 'pavi://project/evil.pth'"
            in outcomes['pavi'])
    assert ("Refused to load checkpoint 'cluster:petrel://bucket/evil.pth'"
            in outcomes['petrel'])
    path, _ = cases['local']
    assert f'Refused to load checkpoint {path!r}' in outcomes['local']


def test_good_files_load_through_every_scheme(tmp_path, monkeypatch):
    """A torchvision-style state dict and MMEngine's own checkpoint load
    through each scheme, with plain numpy arrays and HistoryBuffers."""
    work = tmp_path / 'run'
    make_runner(work).train()
    runner_checkpoint = torch.load(work / 'epoch_1.pth')
    state = ToyDetector().state_dict()

    def good(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
        torch.save(dict(runner_checkpoint, state_dict=state), path)

    cases, env = prepare_home(str(tmp_path), good)
    for key in ('TORCH_HOME', 'MMENGINE_HOME', 'FAKE_PAVI_FILE',
                'FAKE_PETREL_FILE'):
        monkeypatch.setenv(key, env[key])
    monkeypatch.syspath_prepend(str(tmp_path / 'clients'))
    for case, (path, _) in cases.items():
        checkpoint = CheckpointLoader.load_checkpoint(path)
        state_dict = checkpoint['state_dict']
        if case == 'mmcls':  # MMEngine keeps only the backbone's keys
            assert set(state_dict) == {
                key[len('backbone.'):] for key in state
                if key.startswith('backbone.')}
            continue
        for key, value in state.items():
            assert torch.equal(state_dict[key], value), (case, key)
        buffer = checkpoint['message_hub']['log_scalars']['train/loss']
        assert type(buffer) is HistoryBuffer
        assert type(buffer._log_history) is np.ndarray
        key = checkpoint['rng_state']['numpy']['state']['key']
        assert type(key) is np.ndarray and key.dtype == np.uint32, case
        model = ToyDetector()
        load_checkpoint(model, path, strict=True)


# ---- forged numpy objects and HistoryBuffer state ----------------------


class ForgedDtype:
    """Pickles as numpy.dtype(spec) with the given __setstate__ state."""

    def __init__(self, spec, state):
        self.spec, self.state = spec, state

    def __reduce__(self):
        return np.dtype, (self.spec, False, True), self.state


class ForgedArray:

    def __init__(self, dtype, shape, data):
        self.dtype, self.shape, self.data = dtype, shape, data

    def __reduce__(self):
        return (np._core.multiarray._reconstruct, (np.ndarray, (0, ), b'b'),
                (1, self.shape, self.dtype, False, self.data))


class ForgedScalar:

    def __init__(self, dtype, data):
        self.dtype, self.data = dtype, data

    def __reduce__(self):
        return np._core.multiarray.scalar, (self.dtype, self.data)


class ForgedHistoryBuffer:
    """Saved as a real HistoryBuffer that pickles with the given state."""

    def __init__(self, state):
        self.state = state


def save_forged(obj, path):
    """torch.save, with HistoryBuffers pickled from a ForgedHistoryBuffer's
    state (through copyreg's table, as pickle checks the object's class)."""
    if not isinstance(obj['meta']['forged'], ForgedHistoryBuffer):
        return torch.save(obj, path)
    state = obj['meta']['forged'].state
    copyreg.pickle(HistoryBuffer,
                   lambda _: (copyreg.__newobj__, (HistoryBuffer, ), state))
    try:
        torch.save({'meta': {'forged': HistoryBuffer()}}, path)
    finally:
        del copyreg.dispatch_table[HistoryBuffer]


# flags 0 instead of 63: numpy would take the file's bytes as pointers
OBJECT_NO_FLAGS = ForgedDtype('O', (3, '|', None, None, None, -1, -1, 0))
# a sub-array of 2**20 float64 (8 MiB an element)
SUBARRAY = ForgedDtype(
    'f8', (3, '|', (np.dtype('f8'), (1 << 20, )), None, None, 8 << 20, 8, 0))
STRUCTURED = ForgedDtype(
    'V16', (3, '|', None, ('a', ), {'a': (np.dtype('O'), 0)}, 16, 1, 63))
F8 = ForgedDtype('f8', (3, '<', None, None, None, -1, -1, 0))


def history_state(**changes):
    state = {
        'max_length': 10,
        '_log_history': np.array([1.0, 5.0]),
        '_count_history': np.array([1, 1]),
        'statistics_methods': {
            name: getattr(HistoryBuffer, name)
            for name in ('min', 'max', 'current', 'mean')
        }
    }
    state.update(changes)
    return state


FORGERIES = {
    'object dtype, flags cleared, as scalar':
    (ForgedScalar(OBJECT_NO_FLAGS, b'\x41' * 8), "numpy dtype 'O'"),
    'object dtype, flags cleared, as array':
    (ForgedArray(OBJECT_NO_FLAGS, (2, ), b'\x41' * 16), "numpy dtype 'O'"),
    'sub-array dtype over an 8-byte buffer':
    (ForgedArray(SUBARRAY, (1, ), b'\x00' * 8), 'no fields, sub-array'),
    'structured dtype with an object field':
    (ForgedArray(STRUCTURED, (1, ), b'\x00' * 16), "numpy dtype 'V16'"),
    'array buffer shorter than its shape':
    (ForgedArray(F8, (1000, ), b'\x00' * 8), 'declare 8000 bytes'),
    'scalar buffer shorter than its dtype':
    (ForgedScalar(F8, b'\x00' * 4), 'declare 8 bytes'),
    'dtype on its own, flags cleared':
    (OBJECT_NO_FLAGS, "numpy dtype 'O'"),
    'HistoryBuffer mean swapped for max':
    (ForgedHistoryBuffer(history_state(statistics_methods={
        'mean': HistoryBuffer.max})), 'statistics other than its own'),
    'HistoryBuffer current swapped for bytearray':
    (ForgedHistoryBuffer(history_state(statistics_methods={
        'current': bytearray})), 'statistics other than its own'),
    'HistoryBuffer with extra state':
    (ForgedHistoryBuffer(history_state(_statistics_methods={})),
     'HistoryBuffer state with keys'),
}


@pytest.fixture(scope='module')
def forgery_outcomes(tmp_path_factory):
    folder = tmp_path_factory.mktemp('forged')
    paths = {}
    for index, (case, (forged, _)) in enumerate(FORGERIES.items()):
        paths[case] = str(folder / f'forged{index}.pth')
        save_forged({'meta': {'forged': forged}}, paths[case])
    # each file through MMEngine (with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1),
    # then plain torch.load (the process-wide allow-list; the variable
    # switches weights_only off for it, as torch documents); whatever loads
    # is printed, which would touch bad memory
    code = f'''
        import json, os, pickle, torch
        import mmsoftpool
        from mmengine.logging import HistoryBuffer
        from mmengine.runner import CheckpointLoader
        outcome = {{}}
        for case, path in {paths!r}.items():
            results = []
            for load in (CheckpointLoader.load_checkpoint, torch.load):
                forced = os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
                if load is torch.load:
                    del os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD']
                try:
                    results.append('loaded: ' + repr(load(path)))
                except pickle.UnpicklingError as err:
                    results.append(str(err))
                os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = forced
            outcome[case] = results
        methods = HistoryBuffer._statistics_methods
        buffer = HistoryBuffer([1.0, 5.0], [1, 1])
        outcome['class state'] = [
            all(methods[name] is getattr(HistoryBuffer, name)
                for name in ('min', 'max', 'current', 'mean')),
            float(buffer.statistics('mean')), float(buffer.statistics('current'))]
        print(json.dumps(outcome))
    '''
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')
    return json.loads(run_isolated(code, env).splitlines()[-1]), paths


@pytest.mark.parametrize('case', list(FORGERIES))
def test_forged_objects_are_refused(forgery_outcomes, case):
    outcomes, paths = forgery_outcomes
    through_mmengine, through_torch_load = outcomes[case]
    reason = FORGERIES[case][1]
    assert through_mmengine.startswith(
        f'Refused to load checkpoint {paths[case]!r}'), through_mmengine
    assert reason in through_mmengine
    assert 'Weights only load failed' in through_torch_load
    assert reason in through_torch_load


def test_class_state_is_unchanged_by_forged_statistics(forgery_outcomes):
    outcomes, _ = forgery_outcomes
    assert outcomes['class state'] == [True, 3.0, 5.0]


def test_loading_a_history_buffer_leaves_class_state_alone(tmp_path):
    methods = dict(HistoryBuffer._statistics_methods)
    buffer = HistoryBuffer([1.0, 2.0, 6.0], [1, 1, 1])
    path = tmp_path / 'buffer.pth'
    torch.save({'buffer': buffer}, path)
    loaded = safe.load(str(path))['buffer']
    assert type(loaded) is HistoryBuffer
    assert loaded.statistics('mean') == pytest.approx(3.0)
    assert loaded.statistics('max') == 6.0
    assert 'statistics_methods' not in vars(loaded)
    assert HistoryBuffer._statistics_methods == methods


@pytest.mark.parametrize('dtype', [np.bool_, np.int8, np.uint16, np.int64,
                                   np.float16, np.float32, np.float64,
                                   np.complex128, '>f8', '>i4'])
def test_plain_numpy_arrays_and_scalars_round_trip(tmp_path, dtype):
    """As numpy's own unpickling gives them (which makes big-endian arrays
    native), with plain ndarray types."""
    array = (np.arange(12) % 3).astype(dtype).reshape(3, 4)
    saved = {'array': array, 'fortran': np.asfortranarray(array),
             'scalar': array[1, 1], 'empty': array[:0]}
    path = tmp_path / 'numpy.pth'
    torch.save(saved, path)
    loaded = safe.load(str(path))
    expected = pickle.loads(pickle.dumps(saved, protocol=2))
    for key, value in expected.items():
        assert type(loaded[key]) is type(value), key
        assert loaded[key].dtype == value.dtype, key
        assert np.array_equal(loaded[key], value), key
    assert loaded['fortran'].flags.f_contiguous


def test_other_allow_list_entries_for_numpy_are_refused(tmp_path):
    path = tmp_path / 'plain.pth'
    torch.save({'x': np.arange(3)}, path)
    torch.serialization.add_safe_globals([np.dtype])
    try:
        with pytest.raises(RuntimeError, match='bypasses the checks'):
            safe.load(str(path))
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(safe.SAFE_GLOBALS)


# ---- tools/misc/convert_checkpoint.py ------------------------------------

CONVERT = osp.join(REPO, 'tools', 'misc', 'convert_checkpoint.py')


class OldStyleMeta:
    """A custom class in ``meta``, as old mmcv checkpoints had."""

    def __init__(self):
        self.lr = 0.01

    def __repr__(self):
        return 'OldStyleMeta(lr=0.01)'


@pytest.mark.slow
def test_convert_needs_trust_and_writes_a_safe_file(tmp_path):
    model = ToyDetector()
    source = tmp_path / 'old.pth'
    torch.save({'state_dict': model.state_dict(), 'model': model,
                'meta': {'config': OldStyleMeta(),
                         'history': np.array(['a', 'b'])}}, source)
    with pytest.raises(pickle.UnpicklingError, match='Refused'):
        load_checkpoint(ToyDetector(), str(source))
    out = tmp_path / 'converted.pth'
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [osp.dirname(__file__), os.environ.get('PYTHONPATH', '')]))
    refused = subprocess.run([sys.executable, CONVERT, str(source), str(out)],
                             capture_output=True, text=True, env=env)
    assert refused.returncode == 2
    assert 'pass --trust' in refused.stderr
    assert not out.exists()

    done = subprocess.run(
        [sys.executable, CONVERT, str(source), str(out), '--trust'],
        capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert 'checkpoint.model: ToyDetector -> its state_dict()' in done.stdout
    assert ('checkpoint.meta.config: OldStyleMeta -> its repr string'
            in done.stdout)
    assert 'checkpoint.meta.history: numpy ndarray of dtype <U1' in done.stdout
    converted = safe.load(str(out))
    assert converted['meta'] == {'config': 'OldStyleMeta(lr=0.01)',
                                 'history': ['a', 'b']}
    other = ToyDetector()
    load_checkpoint(other, str(out), strict=True)
    assert torch.equal(other.head.weight, model.head.weight)
    assert sorted(os.listdir(tmp_path)) == ['converted.pth', 'old.pth']
