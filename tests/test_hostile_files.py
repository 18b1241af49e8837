"""Hostile files against safe loading, each loaded in a fresh interpreter.

The corpus (tests/hostile_files.py) is made here: memo objects BUILT twice,
allocation primitives of torch's allow-list, archives whose directory lies,
and one-byte mutations of a real checkpoint's zip headers. Each file goes
through ``CheckpointLoader.load_checkpoint``, ``work_dir://`` and
``find_resumable_checkpoint`` (as ``--resume`` uses it) in a child process,
and must end in a one-line refusal, without a signal, within a time bound and
a peak RSS bounded by the file's size. A damaged newest checkpoint makes
resume fall back to the intact one beside it.
"""
import importlib.util
import io
import json
import os
import os.path as osp
import pickle
import re

import pytest
import torch

import hostile_files as hostile
from helpers import run_python

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# In the children below: run ``load(name, path)`` (a dict) for each file in
# a process forked from the child, which has imported everything once (a
# crash or a blow-up stays in that process); add its peak RSS and exit.
EACH_IN_A_FORK = '''
    import json, os, resource

    def each_in_a_fork(paths, load):
        reports = {}
        for name, path in paths.items():
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read)
                report = load(name, path)
                report['rss_bytes'] = resource.getrusage(
                    resource.RUSAGE_SELF).ru_maxrss * 1024
                with os.fdopen(write, 'w') as f:
                    json.dump(report, f)
                os._exit(0)
            os.close(write)
            with os.fdopen(read) as f:
                sent = f.read()
            _, status = os.waitpid(pid, 0)
            reports[name] = dict(json.loads(sent) if sent else {},
                                 exit=os.waitstatus_to_exitcode(status))
        return reports
'''

# The child: each file through every route, with each route's outcome and
# seconds.
LOAD_EACH_IN_A_FORK = EACH_IN_A_FORK + '''
    import os.path as osp, shutil, sys, time
    import mmsoftpool
    from mmengine.runner import CheckpointLoader
    from mmsoftpool.engine import find_resumable_checkpoint

    paths, intact, work = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]

    def outcome(load):
        start = time.perf_counter()
        try:
            result = load()
        except Exception as err:
            result = f'{type(err).__name__}: {err}'
        return result, time.perf_counter() - start

    def every_route(path, folder):
        # a run's work dir: the file as its newest checkpoint, named by
        # last_checkpoint, an intact older one beside it
        os.makedirs(folder)
        shutil.copy(intact, osp.join(folder, 'epoch_1.pth'))
        newest = osp.join(folder, 'epoch_2.pth')
        shutil.copy(path, newest)
        with open(osp.join(folder, 'last_checkpoint'), 'w') as f:
            f.write(newest)
        return {
            'loader': outcome(lambda: sorted(
                CheckpointLoader.load_checkpoint(path, map_location='cpu'))),
            'work_dir': outcome(lambda: sorted(
                CheckpointLoader.load_checkpoint('work_dir://' + folder,
                                                 map_location='cpu'))),
            'resume': outcome(lambda: osp.basename(
                find_resumable_checkpoint(folder).path)),
        }

    reports = each_in_a_fork(
        paths, lambda name, path: every_route(path, osp.join(work, name)))
    print(json.dumps(reports))
'''


INTACT = {'state_dict': {'w': torch.arange(256.)}, 'meta': {'epoch': 1}}
INTACT_KEYS = sorted(INTACT)


def corpus():
    return {**hostile.rebuilt_memo_files(), **hostile.allocation_files(),
            **hostile.archive_files()}


# The class each file belongs to: forged (refused: nothing of it is used) or
# damaged (not what torch.save writes: resume falls back from it).
REFUSED = {
    'array-built-twice', 'dtype-built-twice', 'history-buffer-built-twice',
    'bytearray', 'float-tensor', 'untyped-storage', 'tensor-newobj',
    'storage-newobj', 'set-of-a-view', 'zero-stride-view', 'legacy-bytearray'
}
DAMAGED = {
    'legacy-storage-size', 'deflate-bomb-repeated', 'duplicated-entry', 'overlapping-entry',
    'directory-flagged-storage', 'compressed-storage', 'case-duplicate'
}


@pytest.fixture(scope='module')
def reports(tmp_path_factory):
    """Each corpus file (and the intact one, for the baseline) through every
    route, with its forked process's peak RSS and exit."""
    folder = tmp_path_factory.mktemp('hostile')
    paths = {}
    for name, data in corpus().items():
        paths[name] = str(folder / f'{name}.pth')
        with open(paths[name], 'wb') as f:
            f.write(data)
    intact = str(folder / 'intact.pth')
    torch.save(INTACT, intact)
    paths['intact'] = intact
    out = run_python(LOAD_EACH_IN_A_FORK, cwd=REPO, args=[
        json.dumps(paths), intact, str(folder / 'work')]).stdout
    return json.loads(out.splitlines()[-1]), paths


def test_the_corpus_is_classified():
    assert set(corpus()) == REFUSED | DAMAGED


def test_the_intact_file_loads_through_every_route(reports):
    report = reports[0]['intact']
    assert report['exit'] == 0
    assert report['loader'][0] == INTACT_KEYS, report
    assert report['resume'][0] == 'epoch_2.pth', report


# Time per route: a real checkpoint of this size loads in milliseconds; the
# archive bomb kept the old check busy for 83 minutes.
SECONDS_PER_ROUTE = 20


@pytest.mark.parametrize('name', sorted(REFUSED | DAMAGED))
def test_hostile_file_is_refused_in_bounded_time_and_memory(name, reports):
    reports, paths = reports
    report = reports[name]
    assert report['exit'] == 0, report  # no signal, no crash
    kind = 'RefusedCheckpoint' if name in REFUSED else 'DamagedCheckpoint'
    for route in ('loader', 'work_dir', 'resume'):
        result, seconds = report[route]
        assert seconds < SECONDS_PER_ROUTE, (route, seconds)
        if route != 'loader' and kind == 'DamagedCheckpoint':
            continue  # resume falls back: below
        assert isinstance(result, str) and result.startswith(f'{kind}: '), \
            (route, result)
        assert '\n' not in result, result
    if kind == 'DamagedCheckpoint':
        assert report['work_dir'][0] == INTACT_KEYS, report
        assert report['resume'][0] == 'epoch_1.pth', report
    # what the file may make the loader allocate (4 times its size and 16
    # MiB of tensors, mmsoftpool.checkpoint_bounds) and the allocator's slack
    size = os.path.getsize(paths[name])
    bound = reports['intact']['rss_bytes'] + 4 * size + (16 << 20) + (64 << 20)
    assert report['rss_bytes'] < bound, (report['rss_bytes'], bound)


def test_a_refused_file_names_what_it_asked_for(reports):
    reports, _ = reports
    assert 'bytearray of something other than bytes' in \
        reports['bytearray']['loader'][0]
    assert 'a second state for the same numpy array' in \
        reports['array-built-twice']['loader'][0]
    assert "the archive entry 'archive/data/0' is flagged as a directory" in \
        reports['directory-flagged-storage']['loader'][0]


# ---------------------------------------------------------------------------
# One-byte mutations of a checkpoint's zip headers


MUTATIONS = 300

FUZZ = '''
    import io, json, os, os.path as osp, shutil, sys
    import torch
    import mmsoftpool.checkpoint as safe
    from mmsoftpool.engine import find_resumable_checkpoint
    sys.path.insert(0, 'tests')
    import hostile_files as hostile

    original, intact, work = sys.argv[1:4]
    data = open(original, 'rb').read()
    expected = torch.load(original)
    counts = {}
    for at, mutated in hostile.header_mutations(data, %d, seed=0):
        try:
            loaded = safe.load(io.BytesIO(mutated), 'mutated')
            same = loaded.keys() == expected.keys() and all(
                torch.equal(loaded['state_dict'][k], v)
                for k, v in expected['state_dict'].items())
            kind = 'loaded' if same else f'WRONG at {at}'
        except (safe.RefusedCheckpoint, safe.DamagedCheckpoint) as err:
            kind = type(err).__name__
            if '\\n' in str(err):
                kind = f'MULTI-LINE at {at}: {err}'
        # resume: the mutated file as the newest checkpoint
        folder = osp.join(work, str(at))
        os.makedirs(folder, exist_ok=True)
        shutil.copy(intact, osp.join(folder, 'epoch_1.pth'))
        newest = osp.join(folder, 'epoch_2.pth')
        with open(newest, 'wb') as f:
            f.write(mutated)
        with open(osp.join(folder, 'last_checkpoint'), 'w') as f:
            f.write(newest)
        try:
            chosen = osp.basename(find_resumable_checkpoint(folder).path)
        except Exception as err:
            chosen = f'{type(err).__name__}: {err}'
        wanted = {'loaded': 'epoch_2.pth',
                  'DamagedCheckpoint': 'epoch_1.pth'}.get(kind)
        if kind == 'RefusedCheckpoint':
            wanted = chosen if chosen.startswith('RefusedCheckpoint') else None
        if chosen != wanted:
            kind = f'RESUMED {chosen} after {kind} at {at}'
        shutil.rmtree(folder)
        counts[kind] = counts.get(kind, 0) + 1
    print(json.dumps(counts))
''' % MUTATIONS


def test_header_mutations_load_the_same_weights_or_fall_back(tmp_path):
    """Each mutation either loads the same tensors or is refused in one line,
    and resume then takes the intact older checkpoint."""
    original = tmp_path / 'epoch_2.pth'
    torch.save({'state_dict': {f'layer{i}.weight': torch.randn(8, 8)
                               for i in range(3)}, 'meta': {'epoch': 2}},
               original)
    intact = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {'w': torch.zeros(2)}}, intact)
    out = run_python(FUZZ, cwd=REPO, args=[
        str(original), str(intact), str(tmp_path / 'work')]).stdout
    counts = json.loads(out.splitlines()[-1])
    assert set(counts) <= {'loaded', 'DamagedCheckpoint',
                           'RefusedCheckpoint'}, counts
    assert sum(counts.values()) == MUTATIONS
    # most header bytes matter: a check that let everything through fails
    assert counts.get('DamagedCheckpoint', 0) > MUTATIONS // 2, counts


def test_header_positions_cover_every_header():
    data = hostile.zip_archive([('a/data.pkl', b'x' * 10), ('a/data/0', b'')])
    positions = hostile.header_positions(data)
    # two local headers (30 bytes), two directory records (46), the end (22)
    assert len(positions) == 2 * 30 + 2 * 46 + 22


# ---------------------------------------------------------------------------
# Which checkpoint --resume continues from


def write_checkpoint(path, epoch, mtime):
    torch.save({'meta': {'epoch': epoch}, 'state_dict': {}}, path)
    os.utime(path, (mtime, mtime))


def test_resume_follows_last_checkpoint_not_an_older_runs_higher_epoch(
        tmp_path):
    """An earlier run left epoch_3.pth; this run stopped after epoch 1."""
    from mmsoftpool.engine import find_resumable_checkpoint
    write_checkpoint(tmp_path / 'epoch_3.pth', 3, 1_000_000)
    write_checkpoint(tmp_path / 'epoch_1.pth', 1, 2_000_000)
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_1.pth'))
    found = find_resumable_checkpoint(str(tmp_path))
    assert found.path == str(tmp_path / 'epoch_1.pth')
    assert 'named by' in found.describe()


def test_resume_without_a_whole_last_checkpoint_keeps_kinds_apart(tmp_path):
    """last_checkpoint names a damaged iteration checkpoint: the fallback is
    the newest whole iteration checkpoint, not a newer epoch one."""
    from mmsoftpool.engine import find_resumable_checkpoint
    write_checkpoint(tmp_path / 'iter_100.pth', 1, 1_000_000)
    write_checkpoint(tmp_path / 'epoch_9.pth', 9, 3_000_000)
    (tmp_path / 'iter_200.pth').write_bytes(b'PK\x03\x04 cut short')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_200.pth'))
    found = find_resumable_checkpoint(str(tmp_path))
    assert found.path == str(tmp_path / 'iter_100.pth')
    assert found.skipped[0][0] == str(tmp_path / 'iter_200.pth')
    assert re.search(r"newest whole iter checkpoint; '.*iter_200.pth', named "
                     r'by .*last_checkpoint, is damaged', found.describe())


def test_resume_without_last_checkpoint_takes_the_newest_file(tmp_path):
    from mmsoftpool.engine import find_resumable_checkpoint
    write_checkpoint(tmp_path / 'epoch_3.pth', 3, 1_000_000)
    write_checkpoint(tmp_path / 'epoch_1.pth', 1, 2_000_000)
    assert find_resumable_checkpoint(str(tmp_path)).path == \
        str(tmp_path / 'epoch_1.pth')


# ---------------------------------------------------------------------------
# Plain pickles of results (tools/analysis_tools/mcnemar.py)


class _Call:

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def plain_pickles():
    """Small plain pickles whose allow-listed calls ask for gigabytes."""
    storage_bomb = io.BytesIO()
    torch.save({'m': _Call(bytearray, 4 << 30)}, storage_bomb)
    from torch.storage import _load_from_bytes
    view = torch.zeros(1).expand(1 << 30)
    return {
        'storage-from-a-bomb': pickle.dumps(
            [_Call(_load_from_bytes, storage_bomb.getvalue())], protocol=2),
        'huge-view': pickle.dumps([view], protocol=2),
        'ordered-dict-over-a-view': pickle.dumps(
            _Call(__import__('collections').OrderedDict,
                  torch.zeros(1, 2).expand(1 << 26, 2)), protocol=2),
    }


# The reader of tools/analysis_tools/mcnemar.py (tools/ is not a package).
MCNEMAR = osp.join(REPO, 'tools', 'analysis_tools', 'mcnemar.py')
IMPORT_MCNEMAR = '''
    import importlib.util
    spec = importlib.util.spec_from_file_location('mcnemar', %r)
    mcnemar = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mcnemar)
''' % MCNEMAR

LOAD_PICKLES_EACH_IN_A_FORK = EACH_IN_A_FORK + IMPORT_MCNEMAR + '''
    import sys
    load_pickle = mcnemar.load_pickle

    def outcome(name, path):
        try:
            load_pickle(path)
            return {'result': 'loaded'}
        except Exception as err:
            return {'result': f'{type(err).__name__}: {err}'}

    print(json.dumps(each_in_a_fork(json.loads(sys.argv[1]), outcome)))
'''


@pytest.fixture(scope='module')
def pickle_reports(tmp_path_factory):
    folder = tmp_path_factory.mktemp('pickles')
    paths = {}
    for name, data in plain_pickles().items():
        paths[name] = str(folder / f'{name}.pkl')
        with open(paths[name], 'wb') as f:
            f.write(data)
    out = run_python(LOAD_PICKLES_EACH_IN_A_FORK, cwd=REPO,
                     args=[json.dumps(paths)]).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize('name', sorted(plain_pickles()))
def test_plain_pickle_of_results_cannot_allocate_what_it_asks(
        name, pickle_reports):
    report = pickle_reports[name]
    result, rss = report['result'], report['rss_bytes']
    assert report['exit'] == 0
    assert result.startswith('UnpicklingError: Refused to load'), result
    assert '\n' not in result
    assert rss < 1 << 30, rss


def test_plain_pickle_of_real_results_loads(tmp_path):
    spec = importlib.util.spec_from_file_location('mcnemar', MCNEMAR)
    mcnemar = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mcnemar)
    load_pickle = mcnemar.load_pickle
    results = [{'pred_score': torch.rand(5), 'gt_label': torch.tensor([3])}]
    path = tmp_path / 'results.pkl'
    path.write_bytes(pickle.dumps(results))
    loaded = load_pickle(str(path))
    assert torch.equal(loaded[0]['pred_score'], results[0]['pred_score'])


# ---------------------------------------------------------------------------
# A config stored in a checkpoint is not run


INFERENCER_WITHOUT_CONFIG = '''
    import os, sys
    import mmsoftpool
    from mmdet.apis import DetInferencer
    try:
        DetInferencer(model=None, weights=sys.argv[1], device='cpu')
        print('built')
    except Exception as err:
        print(f'{type(err).__name__}: {err}')
'''


def test_inferencer_refuses_a_config_from_the_checkpoint(tmp_path):
    marker = tmp_path / 'ran'
    cfg = f"import os; os.system('touch {marker}')\nmodel = dict()\n"
    path = tmp_path / 'weights.pth'
    torch.save({'state_dict': {}, 'meta': {}, 'message_hub': {
        'runtime_info': {'cfg': cfg}}}, path)
    out = run_python(INFERENCER_WITHOUT_CONFIG, cwd=str(tmp_path),
                     args=[str(path)]).stdout.strip().splitlines()
    assert out[-1].startswith('RefusedCheckpoint: DetInferencer(model=None'), \
        out
    assert 'pass the config file as model=' in out[-1]
    assert not marker.exists()
