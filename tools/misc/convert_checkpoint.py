"""Convert a trusted checkpoint that safe loading refuses into one it reads.

    python tools/misc/convert_checkpoint.py IN OUT --trust [--overwrite]

Safe loading (``weights_only=True``, mmsoftpool/checkpoint/) refuses a
checkpoint that holds objects other than tensors, plain containers, numpy
arrays / scalars of numeric and bool dtypes and MMEngine's ``HistoryBuffer``:
old mmcv checkpoints with a pickled ``Config``, whole pickled models, custom
classes in ``meta``. This tool loads IN with ``weights_only=False``, which
RUNS ANY CODE THE FILE HOLDS, so it does so only with ``--trust``. It keeps
what safe loading reads and converts the rest, listing every conversion:

- an ``nn.Module`` becomes its ``state_dict()``;
- a dict, list or tuple subclass (``ConfigDict``, a named tuple) becomes a
  plain dict, list or tuple;
- a numpy array or scalar of another dtype becomes a list / Python value;
- any other object becomes its ``repr`` string.

The converted data is read back with safe loading before OUT is written
(atomically: a temporary file beside it, fsync, rename); an existing OUT is
replaced only with ``--overwrite``.
"""
import io
import os.path as osp
from collections import OrderedDict

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from mmsoftpool.checkpoint import is_plain_dtype
from mmsoftpool.checkpoint import load as safe_load
from mmsoftpool.engine import write_atomically
from mmsoftpool.tools.launch import ToolParser, UserError, add_overwrite_arg, output_path, run_tool

# Kept as they are (exact types; tensors and parameters of any kind).
PLAIN_VALUES = (type(None), bool, int, float, complex, str, bytes,
                torch.dtype, torch.device, torch.Size, HistoryBuffer)


def convert(value, path, report):
    """``value`` with everything safe loading refuses converted; each
    conversion is appended to ``report`` as (path, what, became)."""
    if type(value) in PLAIN_VALUES or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        if is_plain_dtype(value.dtype):
            return np.asarray(value) if isinstance(value, np.ndarray) \
                else value
        report.append((path, f'numpy {type(value).__name__} of dtype '
                       f'{value.dtype}', 'a Python list / value'))
        return convert(value.tolist(), path, report)
    if isinstance(value, torch.nn.Module):
        report.append((path, type(value).__name__, 'its state_dict()'))
        return convert(value.state_dict(), path, report)
    if isinstance(value, dict):
        if type(value) not in (dict, OrderedDict):
            report.append((path, type(value).__name__, 'a dict'))
            value = dict(value)
        items = ((key, convert(item, f'{path}.{key}', report))
                 for key, item in value.items())
        return type(value)(items)
    if isinstance(value, (list, tuple, set)):
        plain = set if isinstance(value, set) else \
            list if isinstance(value, list) else tuple
        if type(value) is not plain:
            report.append((path, type(value).__name__, plain.__name__))
        return plain(
            convert(item, f'{path}[{index}]', report)
            for index, item in enumerate(value))
    report.append((path, type(value).__name__, 'its repr string'))
    return repr(value)


def save_and_check(checkpoint, out):
    """Reads the serialised ``checkpoint`` back with safe loading, then
    writes ``out`` atomically (temporary file, fsync, rename)."""
    with io.BytesIO() as buffer:
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
    safe_load(io.BytesIO(data), name=out)
    write_atomically(out, data)


def main(argv=None):
    parser = ToolParser(
        description='Convert a trusted checkpoint into one that safe loading '
        '(weights_only=True) reads.')
    parser.add_argument('input', help='the checkpoint to convert')
    parser.add_argument('output', help='where to write the converted file')
    parser.add_argument(
        '--trust', action='store_true',
        help='load INPUT with weights_only=False, which runs any code it '
        'holds: pass it only for a file whose origin you trust')
    add_overwrite_arg(parser)
    args = parser.parse_args(argv)
    if not args.trust:
        parser.error('loading a checkpoint that safe loading refuses runs the '
                     'code it may hold; pass --trust if you trust where '
                     f'{args.input!r} comes from')
    if not osp.isfile(args.input):
        what = 'is a folder' if osp.isdir(args.input) else 'no such file'
        parser.error(f'input: {what} {args.input!r}')
    if osp.abspath(args.input) == osp.abspath(args.output):
        parser.error(f'output {args.output!r} is the input: write the '
                     'converted file under another name, so the original is '
                     'kept')
    output_path(args.output, 'output', args.overwrite)
    try:
        checkpoint = torch.load(
            args.input, map_location='cpu', weights_only=False)
    except Exception as err:  # a damaged file fails in many ways in torch
        raise UserError(f'input {args.input!r}: torch.load cannot read it '
                        f'({type(err).__name__}: '
                        f'{" ".join(str(err).split())})') from None
    report = []
    converted = convert(checkpoint, 'checkpoint', report)
    save_and_check(converted, args.output)
    for path, what, became in report:
        print(f'{path}: {what} -> {became}')
    print(f'wrote {args.output} ({len(report)} objects converted); it loads '
          'with weights_only=True')


if __name__ == '__main__':
    run_tool(main)
