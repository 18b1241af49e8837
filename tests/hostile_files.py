"""Hostile checkpoint files, made by the tests that load them.

Each maker writes one file that attacks a class of weakness of safe loading
(see docs/checkpoints.md, "What a file can make the loader do"): memo
objects BUILT twice, allocation primitives of torch's allow-list, archive
entries duplicated, overlapping, compressed or flagged as folders, and one-byte
mutations of a real checkpoint's zip headers. The pickles are written opcode
by opcode (protocol 2, what torch.save writes), the archives record by record.
"""
import io
import random
import struct
import zlib

import numpy as np
import torch

# --------------------------------------------------------------------------
# Pickle opcodes (protocol 2)


def glob(module, name):
    return b'c' + module.encode() + b'\n' + name.encode() + b'\n'


def text(value):
    data = value.encode()
    return b'X' + struct.pack('<I', len(data)) + data


def integer(value):
    return b'J' + struct.pack('<i', value)


def tup(*items):
    return b'(' + b''.join(items) + b't'


def raw_bytes(data):
    """bytes as protocol 2 writes them: _codecs.encode(latin-1 text)."""
    return glob('_codecs', 'encode') + tup(
        text(data.decode('latin1')), text('latin1')) + b'R'


def put(index):
    return b'q' + bytes([index])


def get(index):
    return b'h' + bytes([index])


def dictionary(*pairs):
    return b'}(' + b''.join(k + v for k, v in pairs) + b'u'


def call(func, *args):
    return func + tup(*args) + b'R'


def pickle_of(body):
    return b'\x80\x02' + body + b'.'


def dtype(spec='<f8'):
    return call(glob('numpy', 'dtype'), text(spec[1:]), b'\x89', b'\x88') + \
        tup(integer(3), text(spec[0]), b'N', b'N', b'N', integer(-1),
            integer(-1), integer(0)) + b'b'


def numpy_array(values, memo=None):
    """A float64 numpy array as numpy pickles it, kept in the memo."""
    data = np.asarray(values, '<f8').tobytes()
    return (call(glob('numpy._core.multiarray', '_reconstruct'),
                 glob('numpy', 'ndarray'), tup(integer(0)), raw_bytes(b'b'))
            + (put(memo) if memo is not None else b'')
            + array_state(len(values), data) + b'b')


def array_state(length, data):
    return tup(integer(1), tup(integer(length)), dtype(), b'\x89',
               raw_bytes(data))


def history_buffer(log, count):
    return (glob('mmengine.logging.history_buffer', 'HistoryBuffer') + b')'
            + b'\x81' + dictionary((text('max_length'), integer(10)),
                                   (text('_log_history'), log),
                                   (text('_count_history'), count)) + b'b')


# --------------------------------------------------------------------------
# Zip archives laid out as torch.save does, with a few forgeries


def torch_records(obj):
    """The (name, data) records of ``torch.save(obj)``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    import zipfile
    with zipfile.ZipFile(buffer) as archive:
        return [(info.filename, archive.read(info))
                for info in archive.infolist()]


def zip_archive(records, *, deflate=(), directory=(), repeat=None,
                overlap=None):
    """A zip of ``records`` (name, data): ``deflate`` names are compressed,
    ``directory`` names carry the MS-DOS folder attribute, ``repeat=(name,
    n)`` lists that entry n times in the directory, ``overlap=name`` points
    that entry's directory record at the previous entry's data."""
    out, central, offsets = bytearray(), [], {}
    for name, data in records:
        stored = data
        method = 0
        if name in deflate:
            compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
            stored = compressor.compress(data) + compressor.flush()
            method = 8
        crc = zlib.crc32(data)
        offsets[name] = len(out)
        encoded = name.encode()
        out += struct.pack('<4s5H3I2H', b'PK\x03\x04', 20, 0, method, 0, 0,
                           crc, len(stored), len(data), len(encoded), 0)
        out += encoded + stored
        central.append((name, method, crc, len(stored), len(data)))
    start = len(out)
    entries = []
    previous = None
    for name, method, crc, csize, size in central:
        attributes = 0x10 if name in directory else 0
        offset = offsets[name]
        if name == overlap and previous is not None:
            offset = offsets[previous]
        encoded = name.encode()
        entry = struct.pack('<4s6H3I5HII', b'PK\x01\x02', 20, 20, 0, method,
                            0, 0, crc, csize, size, len(encoded), 0, 0, 0, 0,
                            attributes, offset) + encoded
        count = repeat[1] if repeat and repeat[0] == name else 1
        entries += [entry] * count
        previous = name
    directory_bytes = b''.join(entries)
    out += directory_bytes
    out += struct.pack('<4s4H2IH', b'PK\x05\x06', 0, 0, len(entries),
                       len(entries), len(directory_bytes), start, 0)
    return bytes(out)


def replace_record(records, name, data):
    return [(n, data if n == name else d) for n, d in records]


def data_pkl(records):
    return next(n for n, _ in records if n.endswith('/data.pkl'))


# --------------------------------------------------------------------------
# The corpus: name -> bytes of the file


class _Call:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _saved(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def rebuilt_memo_files():
    """A numpy array BUILT again after a HistoryBuffer took it (numpy's
    second __setstate__ frees the buffer the first one's views point into),
    and the same for a dtype and a HistoryBuffer."""
    records = torch_records({'x': torch.zeros(2)})
    big = np.arange(1 << 20, dtype='<f8')  # 8 MB
    array_twice = pickle_of(dictionary(
        (text('buffer'), history_buffer(numpy_array(big, memo=0), get(0))),
        (text('again'), get(0) + array_state(1, b'\0' * 8) + b'b')))
    dtype_twice = pickle_of(dictionary((text('dtype'), dtype() + put(0)), (
        text('again'), get(0) + tup(integer(3), text('>'), b'N', b'N', b'N',
                                    integer(-1), integer(-1), integer(0))
        + b'b')))
    buffer_twice = pickle_of(dictionary(
        (text('buffer'), history_buffer(numpy_array([1.0]), numpy_array([1.0]))
         + put(0)),
        (text('again'), get(0) + dictionary(
            (text('max_length'), integer(10)),
            (text('_log_history'), numpy_array([2.0])),
            (text('_count_history'), numpy_array([2.0]))) + b'b')))
    name = data_pkl(records)
    return {
        'array-built-twice': zip_archive(
            replace_record(records, name, array_twice)),
        'dtype-built-twice': zip_archive(
            replace_record(records, name, dtype_twice)),
        'history-buffer-built-twice': zip_archive(
            replace_record(records, name, buffer_twice)),
    }


def allocation_files():
    """Tiny files whose allow-listed calls ask for gigabytes."""
    records = torch_records({'x': torch.zeros(2)})
    tensor_new = pickle_of(glob('torch', 'Tensor') + tup(integer(1 << 30))
                           + b'\x81')
    storage_new = pickle_of(glob('torch', 'UntypedStorage')
                            + tup(integer(1 << 30)) + b'\x81')
    return {
        'bytearray': _saved({'meta': _Call(bytearray, 4 << 30)}),
        'float-tensor': _saved({'w': _Call(torch.FloatTensor, 1 << 30)}),
        'untyped-storage': _saved({'w': _Call(torch.UntypedStorage, 4 << 30)}),
        'tensor-newobj': zip_archive(
            replace_record(records, data_pkl(records), tensor_new)),
        'storage-newobj': zip_archive(
            replace_record(records, data_pkl(records), storage_new)),
        'set-of-a-view': _saved(
            {'s': _Call(set, torch.zeros(1).expand(1 << 28))}),
        'zero-stride-view': _saved({'w': torch.zeros(1).expand(1 << 30)}),
        'legacy-bytearray': _legacy({'meta': _Call(bytearray, 4 << 30)}),
        'legacy-storage-size': _legacy_forged_numel(),
    }


def _legacy(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def _legacy_forged_numel():
    """A legacy file whose storage declares 2**30 floats and holds 4."""
    data = _legacy({'w': torch.zeros(4)})
    # The persistent id is ('storage', type, key, 'cpu', numel): the numel
    # (BININT1 4) follows the location, after the memo PUT of 'cpu' if any.
    at = data.index(b'X\x03\x00\x00\x00cpu') + 8
    if data[at:at + 1] == b'q':
        at += 2
    assert data[at:at + 2] == b'K\x04', data[at:at + 2]
    return data[:at] + integer(1 << 30) + data[at + 2:]


def archive_files():
    """Archives whose directory lies about the records torch will read."""
    records = torch_records({'w': torch.arange(256.)})
    storage = next(n for n, _ in records if '/data/' in n)
    bomb_records = replace_record(records, storage, bytes(64 << 20))
    return {
        'deflate-bomb-repeated': zip_archive(
            bomb_records, deflate={storage}, repeat=(storage, 2000)),
        'duplicated-entry': zip_archive(records, repeat=(storage, 2)),
        'overlapping-entry': zip_archive(records, overlap=storage),
        'directory-flagged-storage': zip_archive(records,
                                                 directory={storage}),
        'compressed-storage': zip_archive(records, deflate={storage}),
        'case-duplicate': zip_archive(
            records + [(storage.upper().replace('ARCHIVE', 'archive'),
                        records[-1][1])]),
    }


def header_positions(data):
    """Byte positions of ``data``'s zip headers: local headers (not names),
    directory records and the end records."""
    positions = []
    at = 0
    while True:
        at = data.find(b'PK', at)
        if at < 0:
            return positions
        kind = data[at + 2:at + 4]
        length = {b'\x03\x04': 30, b'\x01\x02': 46, b'\x05\x06': 22,
                  b'\x06\x06': 56, b'\x06\x07': 20}.get(kind)
        if length:
            positions += range(at, min(at + length, len(data)))
        at += 2


def header_mutations(data, count, seed=0):
    """``count`` copies of ``data`` with one header byte changed each."""
    rng = random.Random(seed)
    positions = header_positions(data)
    mutated = []
    for _ in range(count):
        copy = bytearray(data)
        at = rng.choice(positions)
        copy[at] = (copy[at] + rng.randrange(1, 256)) % 256
        mutated.append((at, bytes(copy)))
    return mutated


def with_directory_flag(data, record):
    """``data`` (a zip) with the MS-DOS folder attribute set on the directory
    entry of the record whose name ends with ``record``: torch's reader then
    skips that record and leaves the tensor's memory uninitialised."""
    data = bytearray(data)
    at = 0
    while (at := data.find(b'PK\x01\x02', at)) >= 0:
        name_length = struct.unpack_from('<H', data, at + 28)[0]
        if bytes(data[at + 46:at + 46 + name_length]).endswith(
                record.encode()):
            data[at + 38] |= 0x10  # the low byte of the external attributes
            return bytes(data)
        at += 4
    raise ValueError(f'no record {record!r}')
