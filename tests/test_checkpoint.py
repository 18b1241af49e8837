"""Safe loading of checkpoints (mmsoftpool/checkpoint/) and the checkpoint
hooks (mmsoftpool/engine/hooks), on checkpoints written by MMEngine's Runner.

A tiny model trained by a real Runner for one epoch (a few milliseconds per
step) gives real checkpoints: message hub, optimizer and scheduler states.
"""
import io
import os
import os.path as osp
import pickle
import pickletools
import shutil
import subprocess
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from torch.utils.data import Dataset

import mmsoftpool  # noqa: F401  installs the allow-list
import mmsoftpool.engine  # noqa: F401  registers the hooks
from helpers import run_python

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


class ToyDetector(BaseModel):
    """A 'backbone' and a 'head' whose size depends on the class count."""

    def __init__(self, num_classes=3, width=4, dropout=0.0):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Linear(2, width), nn.BatchNorm1d(width), nn.Dropout(dropout))
        self.head = nn.Linear(width, num_classes)

    def forward(self, inputs, labels, mode='tensor'):
        logits = self.head(self.backbone(inputs))
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(logits, labels))
        if mode == 'predict':
            return list(logits.argmax(1) == labels)
        return logits


class ToyAccuracy(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results.extend(bool(correct) for correct in data_samples)

    def compute_metrics(self, results):
        return dict(accuracy=sum(results) / len(results))


class ToyData(Dataset):

    def __len__(self):
        return 16

    def __getitem__(self, index):
        return dict(
            inputs=torch.tensor([float(index % 5), 1.0]),
            labels=torch.tensor(index % 3))


def make_runner(work_dir, model=None, max_epochs=1, **kwargs):
    settings = dict(
        model=model if model is not None else ToyDetector(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=ToyData(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate'),
            batch_size=4,
            num_workers=0),
        optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=2),
            # `end` fixed: by default it is max_epochs, which the stopped
            # run of a resume test sets lower
            dict(type='MultiStepLR', milestones=[1], by_epoch=True, end=9)
        ],
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[
            dict(type='CheckpointMatchHook'),
            dict(type='RNGStateHook')
        ],
        randomness=dict(seed=0))
    settings.update(kwargs)
    return Runner(**settings)


@pytest.fixture(scope='module')
def runner_checkpoint(tmp_path_factory):
    """A checkpoint written by MMEngine's Runner after one epoch."""
    work_dir = tmp_path_factory.mktemp('toy')
    make_runner(work_dir).train()
    return str(work_dir / 'epoch_1.pth')


def pickled_globals(path):
    """The globals a torch.save zip file's pickle refers to."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith('data.pkl'))
        data = archive.read(name)
    found, strings = set(), []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == 'GLOBAL':
            found.add(arg.replace(' ', '.'))
        elif opcode.name == 'STACK_GLOBAL':
            found.add('.'.join(strings[-2:]))
        if isinstance(arg, str):
            strings.append(arg)
    return found


def test_runner_checkpoint_needs_the_allow_list(runner_checkpoint):
    """The premise: MMEngine's checkpoints hold these globals, and plain
    torch refuses them."""
    assert {
        'mmengine.logging.history_buffer.HistoryBuffer',
        '__builtin__.getattr', 'numpy._core.multiarray._reconstruct',
        'numpy.ndarray', 'numpy.dtype'
    } <= pickled_globals(runner_checkpoint)
    allowed = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        with pytest.raises(pickle.UnpicklingError,
                           match='Weights only load failed'):
            torch.load(runner_checkpoint)
    finally:
        torch.serialization.add_safe_globals(allowed)


def test_runner_checkpoint_loads_with_weights_only(runner_checkpoint):
    checkpoint = torch.load(runner_checkpoint, weights_only=True)
    assert set(checkpoint) >= {
        'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers',
        'rng_state'
    }
    buffer = checkpoint['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    # the statistics functions came back and work
    assert buffer.statistics('mean') == pytest.approx(buffer.mean())
    assert buffer.statistics('max') >= buffer.statistics('min')


def test_runner_checkpoint_loads_in_a_fresh_process(runner_checkpoint):
    """``import mmsoftpool`` alone (what custom_imports does) is enough, and
    it needs no other import order."""
    code = ('import torch, mmsoftpool; '
            f'ckpt = torch.load({runner_checkpoint!r}); '
            "print(sorted(ckpt['message_hub']['log_scalars']))")
    out = run_python(code, cwd=REPO)
    assert 'train/loss' in out.stdout


def test_load_checkpoint_and_load_from(runner_checkpoint, tmp_path):
    trained = torch.load(runner_checkpoint)['state_dict']
    model = ToyDetector()
    load_checkpoint(model, runner_checkpoint, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained[key]), key

    runner = make_runner(tmp_path, load_from=runner_checkpoint)
    runner.load_or_resume()
    assert torch.equal(runner.model.head.weight, trained['head.weight'])


def test_resume_restores_counters_optimizer_and_message_hub(
        runner_checkpoint, tmp_path):
    runner = make_runner(
        tmp_path, max_epochs=2, load_from=runner_checkpoint, resume=True)
    runner.train()
    assert runner.epoch == 2
    # the loss history continues the first epoch's (4 iterations each)
    history = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(history) == 8


def test_plain_state_dict_loads(tmp_path):
    """torchvision / open-mmlab style files: a bare state dict."""
    model = ToyDetector()
    path = tmp_path / 'weights.pth'
    torch.save(model.state_dict(), path)
    other = ToyDetector()
    load_checkpoint(other, str(path), strict=True)
    assert torch.equal(other.head.bias, model.head.bias)


def test_numpy1_names_load(tmp_path):
    """Checkpoints written with numpy 1 name ``numpy.core.multiarray``."""
    buffer = io.BytesIO()
    torch.save({'meta': {'history': np.arange(4.0)}},
               buffer,
               _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    assert b'numpy._core.multiarray\n' in data
    path = tmp_path / 'numpy1.pth'
    path.write_bytes(
        data.replace(b'numpy._core.multiarray\n', b'numpy.core.multiarray\n'))
    loaded = torch.load(path, weights_only=True)
    assert np.array_equal(loaded['meta']['history'], np.arange(4.0))


class Payload:
    """Unpickling this runs ``command`` (a classic pickle exploit)."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _payloads(marker):
    return {
        'os.system': Payload(os.system, f'touch {marker}'),
        'subprocess.call': Payload(subprocess.call, ['touch', str(marker)]),
        'builtins.exec': Payload(exec, f'open({str(marker)!r}, "w").close()'),
    }


@pytest.mark.parametrize('zip_format', [True, False])
@pytest.mark.parametrize('kind',
                         ['os.system', 'subprocess.call', 'builtins.exec'])
def test_payload_is_refused_and_not_run(tmp_path, kind, zip_format):
    marker = tmp_path / 'payload_ran'
    model = ToyDetector()
    path = tmp_path / 'evil.pth'
    torch.save({
        'state_dict': model.state_dict(),
        'meta': {'note': _payloads(marker)[kind]}
    }, path, _use_new_zipfile_serialization=zip_format)
    # through MMEngine's function and through the Runner, as the tools do
    with pytest.raises(pickle.UnpicklingError) as error:
        load_checkpoint(ToyDetector(), str(path))
    assert str(path) in str(error.value)
    assert 'Refused' in str(error.value)
    runner = make_runner(tmp_path / 'work', load_from=str(path))
    with pytest.raises(pickle.UnpicklingError):
        runner.load_or_resume()
    assert not marker.exists()


def test_payload_is_refused_when_weights_only_is_forced_off(tmp_path):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD does not switch off this loader."""
    marker = tmp_path / 'payload_ran'
    path = tmp_path / 'evil.pth'
    torch.save({'meta': Payload(os.system, f'touch {marker}')}, path)
    code = ('import mmsoftpool; from mmengine.runner import CheckpointLoader; '
            f'CheckpointLoader.load_checkpoint({str(path)!r})')
    out = run_python(code, cwd=REPO, check=False,
                     env=dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1'))
    assert out.returncode != 0
    assert 'RefusedCheckpoint: Refused' in out.stderr
    assert not marker.exists()


@pytest.mark.parametrize('owner,name', [(HistoryBuffer, 'update'),
                                        (OrderedDict, 'fromkeys'),
                                        (HistoryBuffer, '__init__')])
def test_getattr_is_limited_to_history_buffer_statistics(
        tmp_path, owner, name):
    path = tmp_path / 'getattr.pth'
    torch.save({'meta': Payload(getattr, owner, name)}, path)
    with pytest.raises(pickle.UnpicklingError) as error:
        load_checkpoint(ToyDetector(), str(path))
    assert f'refused getattr({owner!r}, {name!r})' in str(error.value)


@pytest.mark.parametrize('damage', ['truncated', 'zeros', 'text'])
def test_damaged_checkpoint_is_named(runner_checkpoint, tmp_path, damage):
    data = open(runner_checkpoint, 'rb').read()
    damaged = {
        'truncated': data[:len(data) // 2],
        'zeros': bytes(len(data)),
        'text': b'{"not": "a checkpoint"}',
    }[damage]
    path = tmp_path / f'{damage}.pth'
    path.write_bytes(damaged)
    with pytest.raises(RuntimeError) as error:
        load_checkpoint(ToyDetector(), str(path))
    assert f"Cannot read checkpoint '{path}'" in str(error.value)
    assert 'damaged, truncated or not a torch.save file' in str(error.value)


def test_damaged_tensor_data_is_named(runner_checkpoint, tmp_path):
    """A checkpoint whose zip index is intact but whose data is not."""
    path = tmp_path / 'bad_data.pth'
    with zipfile.ZipFile(runner_checkpoint) as src, zipfile.ZipFile(
            path, 'w', zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            content = src.read(item)
            if item.filename.endswith('data.pkl'):
                content = content[:len(content) // 2]
            dst.writestr(item, content)
    with pytest.raises(RuntimeError) as error:
        load_checkpoint(ToyDetector(), str(path))
    assert f"Cannot read checkpoint '{path}'" in str(error.value)


def test_missing_checkpoint_is_named(tmp_path):
    path = tmp_path / 'absent.pth'
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        load_checkpoint(ToyDetector(), str(path))


def test_resume_from_another_architecture_lists_keys(runner_checkpoint,
                                                      tmp_path):
    runner = make_runner(
        tmp_path,
        model=ToyDetector(width=8),
        max_epochs=2,
        load_from=runner_checkpoint,
        resume=True)
    with pytest.raises(RuntimeError) as error:
        runner.train()
    message = str(error.value)
    assert f"Checkpoint '{runner_checkpoint}' does not fit" in message
    assert 'resuming needs every key and shape to match' in message
    assert 'shape mismatches' in message
    assert 'backbone.0.weight checkpoint (4, 2) model (8, 2)' in message


def test_resume_auto_names_the_latest_checkpoint(runner_checkpoint, tmp_path):
    """``--resume`` without a path: the latest checkpoint of the work dir."""
    latest = tmp_path / 'epoch_1.pth'
    shutil.copy(runner_checkpoint, latest)
    (tmp_path / 'last_checkpoint').write_text(str(latest))
    runner = make_runner(
        tmp_path, model=ToyDetector(width=8), max_epochs=2, resume=True)
    with pytest.raises(RuntimeError, match=f"Checkpoint '{latest}' does not"):
        runner.load_or_resume()


def test_load_from_with_another_class_count_loads_the_backbone(
        runner_checkpoint, tmp_path):
    """Fine-tuning keeps working: head mismatch reported, backbone loaded."""
    trained = torch.load(runner_checkpoint)['state_dict']
    runner = make_runner(
        tmp_path,
        model=ToyDetector(num_classes=5),
        load_from=runner_checkpoint)
    runner.load_or_resume()
    assert torch.equal(runner.model.backbone[0].weight,
                       trained['backbone.0.weight'])
    assert runner.model.head.weight.shape == (5, 4)


def test_load_from_an_unrelated_checkpoint_is_refused(tmp_path):
    path = tmp_path / 'unrelated.pth'
    torch.save({'state_dict': nn.Conv2d(3, 8, 3).state_dict()}, path)
    runner = make_runner(tmp_path / 'work', load_from=str(path))
    with pytest.raises(RuntimeError) as error:
        runner.load_or_resume()
    message = str(error.value)
    assert f"Checkpoint '{path}' does not fit the model ToyDetector" in message
    assert 'no tensor of it fits the model' in message
    assert 'missing keys (8): backbone.0.weight' in message
    assert 'unexpected keys (2): weight, bias' in message


def test_rng_state_is_saved_and_restored_on_resume(runner_checkpoint,
                                                    tmp_path):
    saved = torch.load(runner_checkpoint)['rng_state']
    runner = make_runner(
        tmp_path, max_epochs=1, load_from=runner_checkpoint, resume=True)
    runner.train()  # resumed at its last epoch: restores, trains nothing
    assert torch.equal(torch.get_rng_state(), saved['torch'])
    assert np.array_equal(np.random.get_state(legacy=False)['state']['key'],
                          saved['numpy']['state']['key'])


@pytest.mark.parametrize('hooks,exact', [([dict(type='RNGStateHook')], True),
                                         ([], False)])
def test_resume_with_validation_and_dropout(tmp_path, hooks, exact):
    """Dropout draws from torch's generator, and so does every validation
    (its dataloader's base seed). A run validated after epoch 1, stopped
    and resumed, must match one that ran both epochs at once; MMEngine alone
    (no hook) does not."""

    def run(work_dir, max_epochs, resume):
        val = dict(
            train_cfg=dict(by_epoch=True, max_epochs=max_epochs,
                           val_interval=1),
            val_dataloader=dict(
                dataset=ToyData(),
                sampler=dict(type='DefaultSampler', shuffle=False),
                collate_fn=dict(type='default_collate'),
                batch_size=4),
            val_cfg=dict(),
            val_evaluator=[ToyAccuracy()])
        torch.manual_seed(0)  # the same initial weights in every run
        runner = make_runner(
            work_dir,
            model=ToyDetector(dropout=0.5),
            resume=resume,
            custom_hooks=hooks,
            **val)
        runner.train()
        return runner.model.state_dict()

    whole = run(tmp_path / 'whole', 2, False)
    run(tmp_path / 'split', 1, False)
    resumed = run(tmp_path / 'split', 2, True)
    same = all(torch.equal(whole[key], resumed[key]) for key in whole)
    assert same == exact
