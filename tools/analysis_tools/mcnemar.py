"""McNemar's test between two classifiers on the same images (SoftPool paper,
Table 4 and supplementary Table S1).

Reads the per-image predictions of two classifiers, as written by
``tools/test.py CONFIG CHECKPOINT --out FILE.pkl`` (MMPretrain's data samples,
dumped by MMEngine's ``DumpResults``), pairs them by image, and reports the
2x2 table of correct / incorrect predictions and McNemar's chi-square with
continuity correction, ``(|b - c| - 1)^2 / (b + c)`` with one degree of
freedom, and its p-value, computed by statsmodels
(``mcnemar(table, exact=False, correction=True)``). Rows are the first
model, columns the second::

                     second correct   second incorrect
    first correct         a                 b
    first incorrect       c                 d

Examples::

    python tools/test.py configs/pretrain/resnet18-softpool_8xb32_in1k.py \\
        softpool.pth --out softpool.pkl
    python tools/test.py configs/pretrain/resnet18-softpool_8xb32_in1k.py \\
        original.pth --out original.pkl \\
        --cfg-options model.backbone.stem_pool_cfg=None
    python tools/analysis_tools/mcnemar.py softpool.pkl original.pkl \\
        --names SoftPool Original

    # the counts of a published table, e.g. the paper's Table S1, ResNet-18
    python tools/analysis_tools/mcnemar.py --table 31838 3795 3011 11356

``--out FILE`` also writes the result as JSON; an existing FILE is replaced
only with ``--overwrite``.

Prediction files are read with a restricted unpickler (:func:`load_pickle`:
tensors, containers and numpy values only), so a file from elsewhere cannot
run code.
"""
import io
import json
import math
import os.path as osp
import pickle
from collections import OrderedDict
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
from statsmodels.stats.contingency_tables import mcnemar

from mmsoftpool import checkpoint_bounds as bounds
from mmsoftpool.checkpoint import load
from mmsoftpool.checkpoint.allow_list import SAFE_GLOBALS, plain_arrays, refuse
from mmsoftpool.tools.launch import (
    ToolParser,
    add_overwrite_arg,
    int_at_least,
    output_path,
    run_tool,
    user_errors,
)

# How the images of the two files are paired: by path when both files have
# it (it survives a different order or sampler), else by dataset index.
PAIRING_KEYS = ('img_path', 'sample_idx')


# ---------------------------------------------------------------------------
# Reading a prediction file: a plain pickle from anywhere, read without
# running code from it.


def _storage_from_bytes(data):
    """Stand-in for ``torch.storage._load_from_bytes`` (how plain pickle
    writes a tensor's storage), which would call ``torch.load`` with
    ``weights_only=False``."""
    return load(io.BytesIO(data), 'a tensor storage inside a pickle')


def _latin1_bytes(text, encoding):
    """Stand-in for ``_codecs.encode``: how protocol 2 writes bytes."""
    if not isinstance(text, str) or encoding != 'latin1':
        raise refuse(f'_codecs.encode(..., {encoding!r})')
    return text.encode('latin1')


def _over_literals(container):
    """``container`` (OrderedDict, torch.Size) built only from the pickle's
    own lists, tuples and dicts: over a tensor it would make one object per
    element of a view as large as the file asks."""

    def build(*args):
        if not all(isinstance(a, (list, tuple, dict)) for a in args):
            raise refuse(f'{container.__name__} of '
                         f'{", ".join(type(a).__name__ for a in args)}')
        return container(*args)

    return build


# What plain pickles of results (MMEngine's DumpResults, tools/test.py --out)
# hold: tensors, ordered dicts, numpy values (safe loading's stand-ins). No
# HistoryBuffer, no getattr.
_PICKLE_GLOBALS = {
    'torch.storage._load_from_bytes': _storage_from_bytes,
    'collections.OrderedDict': _over_literals(OrderedDict),
    'torch.Size': _over_literals(torch.Size),
    '_codecs.encode': _latin1_bytes,
    **{name: obj for obj, name in SAFE_GLOBALS
       if name.startswith('numpy.') or name == 'builtins.bytes'},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Python's recipe for restricting globals, with the list above; the
    tensors a file rebuilds may add up to what a checkpoint of its size may
    hold (mmsoftpool.checkpoint_bounds)."""

    def __init__(self, f, size):
        super().__init__(f)
        self.tensor_bytes_left = bounds.TENSOR_BYTES_PER_FILE_BYTE * size + \
            bounds.TENSOR_BYTES_SLACK

    def find_class(self, module, name):
        if f'{module}.{name}' == 'torch._utils._rebuild_tensor_v2':
            return self._rebuild_tensor
        if f'{module}.{name}' in _PICKLE_GLOBALS:
            return _PICKLE_GLOBALS[f'{module}.{name}']
        raise refuse(f'global {module}.{name}')

    def _rebuild_tensor(self, storage, offset, size, stride, *args):
        if not isinstance(storage, torch.storage.TypedStorage) or not all(
                isinstance(v, (tuple, list)) and all(type(n) is int for n in v)
                for v in (size, stride)) or min(size, default=0) < 0:
            raise refuse(f'a tensor of {type(storage).__name__}, size '
                         f'{size!r}, stride {stride!r}')
        self.tensor_bytes_left -= math.prod(size) * storage.element_size()
        if self.tensor_bytes_left < 0:
            raise refuse('tensors that add up to more than '
                         f'{bounds.TENSOR_BYTES_PER_FILE_BYTE} times the '
                         'file\'s size')
        return torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
                                               *args)


def load_pickle(path):
    """Reads a plain pickle of results (tensors, containers, numpy values)
    without running code from it; errors name the file."""
    with open(path, 'rb') as f:
        data = f.read()
    try:
        unpickler = _RestrictedUnpickler(io.BytesIO(data), len(data))
        return plain_arrays(unpickler.load())
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            f'Refused to load {path!r}: {err}; plain pickles of results '
            'may hold only tensors, containers and numpy values') from None


def _single_label(value, what: str) -> int:
    labels = np.asarray(value).reshape(-1)
    if labels.size != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f'{what} is {value!r}, not a single class index '
                         '(McNemar\'s test here compares single-label '
                         'predictions)')
    return int(labels[0])


def read_predictions(path: str) -> Tuple[str, Dict[object, Tuple[int, int]]]:
    """Read a ``tools/test.py --out`` file of classification predictions.

    Returns the pairing key used (``img_path`` or ``sample_idx``) and a dict
    from each image's key to its ``(ground truth, prediction)``.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'prediction file {path!r} does not exist')
    try:
        results = load_pickle(path)  # runs no code from the file
    except Exception as err:  # pickle raises many types for a bad file
        raise ValueError(f'prediction file {path!r} is not a pickle written '
                         f'by tools/test.py --out ({err})') from None
    if not isinstance(results, list) or not all(
            isinstance(r, dict) for r in results):
        raise ValueError(
            f'prediction file {path!r} holds a {type(results).__name__}, '
            'not the list of per-image dicts that tools/test.py --out writes')
    if not results:
        raise ValueError(f'prediction file {path!r} lists no images')
    for index, result in enumerate(results):
        missing = [k for k in ('gt_label', 'pred_label') if k not in result]
        if missing:
            raise ValueError(
                f'{path!r}, entry {index}, has no {", ".join(missing)} (keys: '
                f'{sorted(result)}); is it a classifier\'s output?')
    key = next((k for k in PAIRING_KEYS if all(k in r for r in results)), None)
    if key is None:
        raise ValueError(f'{path!r}: its entries have neither of '
                         f'{PAIRING_KEYS} to pair images by')
    predictions = {}
    for index, result in enumerate(results):
        image = result[key]
        if image in predictions:
            raise ValueError(f'{path!r} lists {key}={image!r} twice')
        where = f'{path!r}, {key}={image!r}:'
        predictions[image] = (_single_label(result['gt_label'],
                                            f'{where} gt_label'),
                              _single_label(result['pred_label'],
                                            f'{where} pred_label'))
    return key, predictions


def contingency_table(
    first: Dict[object, Tuple[int, int]],
    second: Dict[object, Tuple[int, int]],
    names: Sequence[str] = ('first', 'second')
) -> np.ndarray:
    """The 2x2 table of correct (index 0) / incorrect (index 1) predictions,
    rows for ``first``, columns for ``second``, over the same images."""
    only_first = sorted(set(first) - set(second), key=str)
    only_second = sorted(set(second) - set(first), key=str)
    if only_first or only_second:
        raise ValueError(
            f'the two prediction files cover different images: '
            f'{len(only_first)} only in {names[0]} (e.g. {only_first[:3]}), '
            f'{len(only_second)} only in {names[1]} (e.g. {only_second[:3]})')
    table = np.zeros((2, 2), dtype=np.int64)
    for image, (gt, prediction) in first.items():
        other_gt, other_prediction = second[image]
        if gt != other_gt:
            raise ValueError(
                f'{image!r} has ground truth {gt} in {names[0]} but '
                f'{other_gt} in {names[1]}: not the same val set')
        table[int(prediction != gt), int(other_prediction != gt)] += 1
    return table


def mcnemar_test(table) -> dict:
    """McNemar's chi-square (continuity-corrected, 1 degree of freedom) and
    p-value of a 2x2 table of non-negative counts."""
    table = np.asarray(table)
    if table.shape != (2, 2) or not np.issubdtype(
            table.dtype, np.integer) or (table < 0).any():
        raise ValueError('the table must be 2x2 non-negative integer counts, '
                         f'got {table.tolist()}')
    disagreements = int(table[0, 1] + table[1, 0])
    if disagreements == 0:
        raise ValueError(
            f'the two classifiers never disagree (table {table.tolist()}): '
            'McNemar\'s test, which compares their disagreements, is '
            'undefined')
    result = mcnemar(table, exact=False, correction=True)
    total = int(table.sum())
    return dict(
        table=table.tolist(),
        num_images=total,
        accuracy=[
            float(table[0].sum() / total),
            float(table[:, 0].sum() / total)
        ],
        chi_square=float(result.statistic),
        p_value=float(result.pvalue))


def format_report(result: dict, names: Sequence[str]) -> str:
    (a, b), (c, d) = result['table']
    width = max(len(n) for n in names) + len(' incorrect')
    lines = [
        f'{"":{width}}  {names[1] + " correct":>20}  '
        f'{names[1] + " incorrect":>20}',
        f'{names[0] + " correct":{width}}  {a:>20}  {b:>20}',
        f'{names[0] + " incorrect":{width}}  {c:>20}  {d:>20}',
        f'images: {result["num_images"]}; top-1 accuracy: {names[0]} '
        f'{100 * result["accuracy"][0]:.2f}%, {names[1]} '
        f'{100 * result["accuracy"][1]:.2f}%',
        f'McNemar chi-square (continuity-corrected, 1 dof): '
        f'{result["chi_square"]:.2f}',
        f'p-value: {result["p_value"]:.3g}',
    ]
    return '\n'.join(lines)


def parse_args(args=None):
    parser = ToolParser(
        description='McNemar\'s test between two classifiers\' predictions '
        'on the same images (SoftPool paper, Table 4).')
    parser.add_argument(
        'pred_files',
        nargs='*',
        metavar='PRED_FILE',
        help='two prediction files written by tools/test.py --out')
    parser.add_argument(
        '--table',
        nargs=4,
        type=int_at_least(0),
        metavar=('A', 'B', 'C', 'D'),
        help='test a published 2x2 table instead, row by row: first correct '
        '& second correct, first correct & second incorrect, first '
        'incorrect & second correct, both incorrect')
    parser.add_argument(
        '--names',
        nargs=2,
        default=('first', 'second'),
        metavar=('FIRST', 'SECOND'),
        help='names of the two classifiers in the report')
    parser.add_argument(
        '--out', help='also write the table and the statistics to this JSON')
    add_overwrite_arg(parser)
    args = parser.parse_args(args)
    if (args.table is None) == (len(args.pred_files) != 2):
        parser.error('give either two prediction files or --table A B C D, '
                     f'got {len(args.pred_files)} file(s)'
                     f'{" and --table" if args.table else ""}')
    return args


def main(args=None):
    args = parse_args(args)
    if args.out:
        output_path(args.out, '--out', args.overwrite)
    # The ValueErrors below are the checks of the user's files and table.
    with user_errors(FileNotFoundError, ValueError):
        if args.table is not None:
            table = np.array(args.table, dtype=np.int64).reshape(2, 2)
            paired_by = None
        else:
            key_first, first = read_predictions(args.pred_files[0])
            key_second, second = read_predictions(args.pred_files[1])
            if key_first != key_second:
                raise ValueError(
                    f'{args.pred_files[0]!r} pairs images by {key_first}, '
                    f'{args.pred_files[1]!r} by {key_second}: not written by '
                    'the same kind of config')
            table = contingency_table(first, second, args.names)
            paired_by = key_first
        result = mcnemar_test(table)
    print(format_report(result, args.names))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(
                dict(
                    result,
                    names=list(args.names),
                    pred_files=args.pred_files or None,
                    paired_by=paired_by),
                f,
                indent=1)
    return result


if __name__ == '__main__':
    run_tool(main)
