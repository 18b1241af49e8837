"""Nothing lost when training dies while it writes a checkpoint.

A real MMEngine Runner (the tiny model of test_checkpoint.py, 3 epochs,
``max_keep_ckpts=1``) is killed (``os._exit``, no clean-up) at several points
of writing epoch 2's checkpoint; a new process then resumes with
``find_resumable_checkpoint`` (what ``tools/train.py --resume`` uses) and
finishes. Its final weights must equal those of a run that was never
interrupted. MMEngine's own CheckpointHook, killed the same way, leaves
nothing to resume from.
"""
import os
import os.path as osp
import struct
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch

pytestmark = pytest.mark.slow  # trains in subprocesses killed mid-save

TESTS = osp.dirname(osp.abspath(__file__))

# Runs the tiny model; argv: work_dir, hook type, crash point, output file.
SCRIPT = textwrap.dedent('''
    import os, sys
    import torch
    sys.path.insert(0, {tests!r})
    import mmsoftpool.engine.atomic_files as atomic_files
    from mmsoftpool.engine import find_resumable_checkpoint
    from test_checkpoint import make_runner

    work_dir, hook, crash, out = sys.argv[1:5]
    real_open, real_replace, real_remove = open, os.replace, os.remove
    KILLED = 17

    def crash_open(path, mode='r', *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if 'w' in mode and 'epoch_2.pth' in str(path):
            write = f.write
            def half_then_die(data):
                write(data[:len(data) // 2])
                f.flush()
                os._exit(KILLED)
            f.write = half_then_die
        return f

    def crash_replace(src, dst):
        if crash == 'before-rename' and str(dst).endswith('epoch_2.pth'):
            os._exit(KILLED)
        real_replace(src, dst)
        if crash == 'before-pointer' and str(dst).endswith('epoch_2.pth'):
            os._exit(KILLED)

    def crash_remove(path, *args, **kwargs):
        if crash == 'before-removal' and str(path).endswith('epoch_1.pth'):
            os._exit(KILLED)
        real_remove(path, *args, **kwargs)

    if crash == 'mid-write':
        import builtins
        builtins.open = crash_open  # MMEngine's LocalBackend and ours
    os.replace, os.remove = crash_replace, crash_remove

    resume_from = None
    if crash == 'resume':
        resume_from, why, skipped = find_resumable_checkpoint(work_dir)
        print('RESUMED FROM', resume_from, 'SKIPPED', skipped, 'WHY', why)
        if resume_from is None:
            sys.exit(3)
    torch.manual_seed(0)
    runner = make_runner(
        work_dir, max_epochs=3, load_from=resume_from,
        resume=resume_from is not None,
        default_hooks=dict(
            checkpoint=dict(type=hook, interval=1, max_keep_ckpts=1),
            logger=dict(type='LoggerHook', interval=1)))
    runner.train()
    torch.save(runner.model.state_dict(), out)
''').format(tests=TESTS)


def run(tmp_path, work_dir, hook, crash):
    out = tmp_path / f'{crash}.pth'
    result = subprocess.run(
        [sys.executable, '-c', SCRIPT, str(work_dir), hook, crash, str(out)],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    return result, out


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('whole')
    result, out = run(tmp, tmp / 'work', 'AtomicCheckpointHook', 'none')
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out)


@pytest.mark.parametrize(
    'crash', ['mid-write', 'before-rename', 'before-pointer',
              'before-removal'])
def test_killed_while_saving_resumes_to_the_same_result(
        tmp_path, uninterrupted, crash):
    work = tmp_path / 'work'
    killed, _ = run(tmp_path, work, 'AtomicCheckpointHook', crash)
    assert killed.returncode == 17, killed.stderr[-3000:]
    files = sorted(os.listdir(work))
    assert 'epoch_1.pth' in files or 'epoch_2.pth' in files, files

    resumed, out = run(tmp_path, work, 'AtomicCheckpointHook', 'resume')
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-3000:]
    # last_checkpoint wins when it names a whole file: killed before the
    # pointer moved on, the run repeats epoch 2 (to the same result)
    expected_start = ('epoch_2.pth' if crash == 'before-removal'
                      else 'epoch_1.pth')
    assert f'{expected_start} SKIPPED []' in resumed.stdout
    final = torch.load(out)
    for key, value in uninterrupted.items():
        assert torch.equal(final[key], value), key
    # the survivors: the last checkpoint (and, killed before it could
    # remove it, epoch_1.pth), its pointer, no temporary file (the next save
    # replaced the half-written one)
    files = sorted(os.listdir(work))
    assert [f for f in files if f.endswith('.pth')] == (
        ['epoch_1.pth', 'epoch_3.pth']
        if crash == 'before-removal' else
        ['epoch_3.pth'])
    assert not [f for f in files if f.endswith('.tmp')], files
    assert (work / 'last_checkpoint').read_text().endswith('epoch_3.pth')


def test_mmengine_hook_killed_while_saving_loses_the_run(tmp_path):
    """The premise: MMEngine's CheckpointHook deletes epoch_1.pth before it
    writes epoch_2.pth in place, so the same crash leaves nothing whole."""
    work = tmp_path / 'work'
    killed, _ = run(tmp_path, work, 'CheckpointHook', 'mid-write')
    assert killed.returncode == 17
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth')) == [
        'epoch_2.pth']
    resumed, _ = run(tmp_path, work, 'CheckpointHook', 'resume')
    assert resumed.returncode == 3
    assert 'not a whole zip archive' in resumed.stdout


def test_a_truncated_newest_checkpoint_is_skipped(tmp_path):
    from mmsoftpool.engine import find_resumable_checkpoint
    work = tmp_path / 'work'
    work.mkdir()
    for epoch in (1, 2, 3):
        torch.save({'epoch': epoch, 'weight': torch.randn(1000)},
                   work / f'epoch_{epoch}.pth')
    data = (work / 'epoch_3.pth').read_bytes()
    (work / 'epoch_3.pth').write_bytes(data[:len(data) // 2])
    (work / 'last_checkpoint').write_text(str(work / 'epoch_3.pth'))
    found, _, skipped = find_resumable_checkpoint(str(work))
    assert found == str(work / 'epoch_2.pth')
    assert [path for path, _ in skipped] == [str(work / 'epoch_3.pth')]
    assert 'not a whole zip archive' in skipped[0][1]
    # a flipped byte inside the tensor's data: its CRC fails
    data = bytearray((work / 'epoch_2.pth').read_bytes())
    with zipfile.ZipFile(work / 'epoch_2.pth') as archive:
        info = next(i for i in archive.infolist()
                    if i.filename.endswith('data/0'))
    name_length, extra_length = struct.unpack(
        '<HH', data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length
    data[start + 100] ^= 0xFF
    (work / 'epoch_2.pth').write_bytes(bytes(data))
    found, _, skipped = find_resumable_checkpoint(str(work))
    assert found == str(work / 'epoch_1.pth')
    assert len(skipped) == 2
    # nothing whole at all
    (work / 'epoch_1.pth').write_bytes(b'')
    assert find_resumable_checkpoint(str(work))[0] is None
    nothing = find_resumable_checkpoint(str(tmp_path / 'none'))
    assert (nothing.path, nothing.skipped) == (None, [])
