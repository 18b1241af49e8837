"""Tests of tools/analysis_tools/mcnemar.py: the paper's own counts, the
pairing of two prediction files and the errors for files that cannot be
compared."""
import importlib.util
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.evaluator.metric import DumpResults
from mmpretrain.structures import DataSample
from scipy.stats import chi2

from mmsoftpool.tools.launch import UserError

TOOL = (
    Path(__file__).resolve().parents[1] / 'tools' / 'analysis_tools' /
    'mcnemar.py')
spec = importlib.util.spec_from_file_location('mcnemar', TOOL)
mcnemar = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mcnemar)

# Supplementary Table S1, ResNet-18: rows SoftPool, columns original.
RESNET18_S1 = [[31838, 3795], [3011, 11356]]


def corrected_chi_square(b, c):
    """McNemar's statistic with continuity correction, written out."""
    return (abs(b - c) - 1)**2 / (b + c)


def test_paper_resnet18_counts():
    result = mcnemar.mcnemar_test(RESNET18_S1)
    # Table 4 prints 90.08 for ResNet-18.
    assert round(result['chi_square'], 2) == 90.08
    assert result['chi_square'] == pytest.approx(
        corrected_chi_square(3795, 3011), rel=1e-12)
    # The p-value is checked against our own computation, not the paper's
    # printed one (some of its p-values carry typos).
    assert result['p_value'] == pytest.approx(
        chi2.sf(corrected_chi_square(3795, 3011), df=1), rel=1e-9)
    assert result['num_images'] == 50000
    assert result['accuracy'] == pytest.approx([35633 / 50000, 34849 / 50000])


def test_table_option_prints_the_paper_statistic(capsys, tmp_path):
    out = tmp_path / 'result.json'
    mcnemar.main([
        '--table', '31838', '3795', '3011', '11356', '--names', 'SoftPool',
        'Original', '--out',
        str(out)
    ])
    printed = capsys.readouterr().out
    assert 'McNemar chi-square (continuity-corrected, 1 dof): 90.08' in printed
    assert 'SoftPool correct' in printed and 'Original incorrect' in printed
    saved = json.loads(out.read_text())
    assert saved['table'] == RESNET18_S1
    assert saved['names'] == ['SoftPool', 'Original']


def dump_predictions(path, gt_labels, pred_labels, order=None):
    """A prediction file as tools/test.py --out writes it: MMPretrain data
    samples as dicts, dumped by MMEngine's DumpResults."""
    samples = []
    for index in (order if order is not None else range(len(gt_labels))):
        sample = DataSample().set_gt_label(int(gt_labels[index]))
        sample.set_pred_label(torch.tensor([int(pred_labels[index])]))
        sample.set_pred_score(torch.rand(3))
        sample.set_metainfo(
            dict(img_path=f'val/{index:04d}.png', sample_idx=index))
        samples.append(sample.to_dict())
    dumper = DumpResults(out_file_path=str(path))
    dumper.process({}, samples)
    dumper.compute_metrics(dumper.results)
    return path


@pytest.fixture
def two_classifiers(tmp_path):
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 3, size=200)
    # first right on 150 images, second on 120, with known overlaps
    first_right = np.zeros(200, bool)
    first_right[:150] = True
    second_right = np.zeros(200, bool)
    second_right[40:160] = True
    first = np.where(first_right, gt, (gt + 1) % 3)
    second = np.where(second_right, gt, (gt + 2) % 3)
    # the second file lists the images in another order
    order = rng.permutation(200)
    return (dump_predictions(tmp_path / 'first.pkl', gt, first),
            dump_predictions(tmp_path / 'second.pkl', gt, second,
                             order), first_right, second_right)


def test_table_from_prediction_files(two_classifiers, capsys):
    first_file, second_file, first_right, second_right = two_classifiers
    result = mcnemar.main([str(first_file), str(second_file)])
    both = int((first_right & second_right).sum())
    only_first = int((first_right & ~second_right).sum())
    only_second = int((~first_right & second_right).sum())
    neither = int((~first_right & ~second_right).sum())
    assert result['table'] == [[both, only_first], [only_second, neither]]
    assert (both, only_first, only_second, neither) == (110, 40, 10, 40)
    assert result['chi_square'] == pytest.approx(corrected_chi_square(40, 10))
    assert result['accuracy'] == [0.75, 0.6]
    # Swapping the files transposes the table; the statistic is the same.
    swapped = mcnemar.main([str(second_file), str(first_file)])
    assert swapped['table'] == [[both, only_second], [only_first, neither]]
    assert swapped['chi_square'] == pytest.approx(result['chi_square'])
    assert 'top-1 accuracy: first 75.00%, second 60.00%' in \
        capsys.readouterr().out


def test_files_of_different_images(tmp_path):
    gt = [0, 1, 2, 0]
    first = dump_predictions(tmp_path / 'a.pkl', gt, gt)
    second = dump_predictions(tmp_path / 'b.pkl', gt[:3], gt[:3])
    with pytest.raises(UserError, match='cover different images: 1 only in'):
        mcnemar.main([str(first), str(second)])


def test_files_with_different_ground_truth(tmp_path):
    first = dump_predictions(tmp_path / 'a.pkl', [0, 1, 2], [0, 1, 2])
    second = dump_predictions(tmp_path / 'b.pkl', [0, 1, 1], [0, 1, 2])
    with pytest.raises(UserError, match='ground truth 2 in first but 1'):
        mcnemar.main([str(first), str(second)])


def test_classifiers_that_never_disagree(tmp_path):
    first = dump_predictions(tmp_path / 'a.pkl', [0, 1, 2], [0, 2, 2])
    second = dump_predictions(tmp_path / 'b.pkl', [0, 1, 2], [0, 0, 2])
    with pytest.raises(UserError, match='never disagree'):
        mcnemar.main([str(first), str(second)])


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.pkl'):
        mcnemar.read_predictions(str(tmp_path / 'missing.pkl'))
    not_pickle = tmp_path / 'text.pkl'
    not_pickle.write_text('not a pickle')
    with pytest.raises(ValueError, match='is not a pickle'):
        mcnemar.read_predictions(str(not_pickle))
    detections = tmp_path / 'det.pkl'
    detections.write_bytes(
        pickle.dumps([dict(img_path='a.png', pred_instances={})]))
    with pytest.raises(ValueError, match='has no gt_label, pred_label'):
        mcnemar.read_predictions(str(detections))
    multi_label = tmp_path / 'multi.pkl'
    multi_label.write_bytes(
        pickle.dumps([
            dict(
                img_path='a.png',
                gt_label=torch.tensor([0, 2]),
                pred_label=torch.tensor([0]))
        ]))
    with pytest.raises(ValueError, match='not a single class index'):
        mcnemar.read_predictions(str(multi_label))


def test_bad_tables_and_arguments():
    with pytest.raises(ValueError, match='2x2 non-negative integer'):
        mcnemar.mcnemar_test([[1, -2], [3, 4]])
    with pytest.raises(ValueError, match='2x2 non-negative integer'):
        mcnemar.mcnemar_test([[1, 2, 3], [3, 4, 5]])
    with pytest.raises(SystemExit):
        mcnemar.parse_args(['only_one.pkl'])
    with pytest.raises(SystemExit):
        mcnemar.parse_args(['a.pkl', 'b.pkl', '--table', '1', '2', '3', '4'])


def test_prediction_file_with_a_payload_runs_nothing(tmp_path):
    """The --out files are read without running code from them."""
    marker = tmp_path / 'payload_ran'

    class Payload:

        def __reduce__(self):
            return os.system, (f'touch {marker}', )

    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps([{'gt_label': Payload()}]))
    with pytest.raises(ValueError, match="global posix.system"):
        mcnemar.read_predictions(str(path))
    assert not marker.exists()
