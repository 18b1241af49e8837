"""What a checkpoint file may make safe loading do, checked before torch reads it.

``torch.load(weights_only=True)`` runs no code from the file, but it trusts the
file in two ways that a stranger's file can abuse:

* its allow-list admits callables that allocate what the file asks for:
  ``bytearray(N)``, ``torch.FloatTensor(N)``, ``torch.UntypedStorage(N)``, a
  tensor view of 10**12 elements over one stored element, ``set()`` over such
  a view. An 843-byte file can ask for gigabytes.
* its zip reader finds a record by name and reads what the directory says:
  a duplicated, overlapping, compressed or directory-flagged record is read as
  something other than what a CRC check of the archive saw, or not at all
  (the tensor then holds uninitialised memory).

:func:`check_checkpoint` reads the file once, in time and memory bounded by its
size, and refuses such files before torch does anything: the archive must be
laid out as ``torch.save`` writes it (records stored, each once, one after the
other, CRCs matching), and the pickle is run symbolically over the same
opcodes as torch's weights-only unpickler: every call it would make is checked
against what it may allocate, and every storage it would read must be a record
of exactly its declared size. The total size of the tensors the file builds is
bounded by ``TENSOR_BYTES_PER_FILE_BYTE`` times the file's size (plus a small
constant), which a real checkpoint never comes near.
"""
import io
import pickle
import struct
import warnings
import zipfile
import zlib
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING

import torch

# A checkpoint's tensors may add up to this many times the file's size
# (views sharing one storage count each time), plus TENSOR_BYTES_SLACK.
TENSOR_BYTES_PER_FILE_BYTE = 4
TENSOR_BYTES_SLACK = 16 << 20
_CHUNK = 1 << 20
_LOCAL_HEADER = struct.Struct('<4s22xHH')  # signature, name and extra lengths
_DOS_DIRECTORY = 0x10


class FileRefused(Exception):
    """The file asks for something safe loading does not do."""


class FileDamaged(Exception):
    """The file is not what torch.save writes (damaged or forged)."""


def check_checkpoint(f, size):
    """Refuse (:class:`FileRefused`) or reject (:class:`FileDamaged`) the
    torch.save file open as ``f`` (binary, seekable, ``size`` bytes) before
    torch reads it. Leaves ``f`` at its start."""
    try:
        f.seek(0)
        if f.read(4) == b'PK\x03\x04':  # how torch.load tells the two formats
            _check_zip(f, size)
        else:
            _check_legacy(f, size)
    finally:
        f.seek(0)


# ---------------------------------------------------------------------------
# The zip format (torch >= 1.6).


def _check_zip(f, size):
    f.seek(0)
    try:
        archive = zipfile.ZipFile(f)
        infos = archive.infolist()
        start_dir = archive.start_dir
    except Exception as err:  # a damaged directory fails in many ways
        raise FileDamaged(f'not a whole zip archive ({type(err).__name__}: '
                          f'{err})') from None
    if not infos:
        raise FileDamaged('an empty zip archive')
    records, seen, end = {}, set(), 0
    for info in sorted(infos, key=lambda info: info.header_offset):
        name = info.filename
        # torch's reader (miniz) finds records by name, ignoring case
        if name.lower() in seen:
            raise FileDamaged(f'the archive holds {name!r} twice')
        seen.add(name.lower())
        if info.is_dir() or info.external_attr & _DOS_DIRECTORY:
            raise FileDamaged(f'the archive entry {name!r} is flagged as a '
                              'directory (torch\'s reader would skip it)')
        if info.flag_bits & 0x1:
            raise FileDamaged(f'the archive entry {name!r} is encrypted')
        if info.compress_type != zipfile.ZIP_STORED:
            raise FileDamaged(f'the archive entry {name!r} is compressed '
                              '(torch.save stores every record as is)')
        if info.compress_size != info.file_size:
            raise FileDamaged(f'the archive entry {name!r} declares '
                              f'{info.compress_size} stored bytes for '
                              f'{info.file_size}')
        if info.header_offset < end:
            raise FileDamaged(f'the archive entry {name!r} overlaps the one '
                              'before it')
        f.seek(info.header_offset)
        header = f.read(_LOCAL_HEADER.size)
        if len(header) < _LOCAL_HEADER.size:
            raise FileDamaged(f'the archive entry {name!r} is cut short')
        signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
        if (signature != b'PK\x03\x04'
                or f.read(name_length) != info.orig_filename.encode(
                    'utf-8' if info.flag_bits & 0x800 else 'cp437')):
            raise FileDamaged(f'the local header of {name!r} does not match '
                              'the archive\'s directory')
        start = info.header_offset + _LOCAL_HEADER.size + name_length + \
            extra_length
        end = start + info.file_size
        if end > start_dir:
            raise FileDamaged(f'the archive entry {name!r} runs past the '
                              'archive\'s directory')
        records[name] = (start, info.file_size, info.CRC)
    if min(info.header_offset for info in infos) != 0:
        raise FileDamaged('the archive does not start at the file\'s start')
    # No two entries overlap and none runs past the directory, so this reads
    # at most the file's size.
    for name, (start, length, crc) in records.items():
        if _crc32(f, start, length) != crc:
            raise FileDamaged(f'the archive entry {name!r} fails its CRC '
                              'check')
    prefix = infos[0].filename.split('/', 1)[0]
    if any(not name.startswith(prefix + '/') for name in records):
        raise FileDamaged(f'archive entries outside {prefix}/')
    if f'{prefix}/data.pkl' not in records:
        raise FileDamaged(f'no {prefix}/data.pkl in the archive')
    start, length, _ = records[f'{prefix}/data.pkl']
    f.seek(start)
    pickled = io.BytesIO(f.read(length))

    def storage_bytes(pid, declared):
        key = pid[2]
        record = records.get(f'{prefix}/data/{key}')
        if type(key) is not str or record is None:
            raise FileDamaged(f'a storage ({key!r}) without its record')
        if record[1] != declared:
            raise FileDamaged(f'the storage {key!r} declares {declared} '
                              f'bytes, its record holds {record[1]}')
        return key

    _Pickle(pickled, size, storage_bytes, zip_ids=True).run()


def _crc32(f, start, length):
    f.seek(start)
    crc = 0
    while length > 0:
        chunk = f.read(min(length, _CHUNK))
        if not chunk:
            raise FileDamaged('the file is cut short')
        crc = zlib.crc32(chunk, crc)
        length -= len(chunk)
    return crc


# ---------------------------------------------------------------------------
# The legacy format: five pickles, then each storage's bytes.


def _check_legacy(f, size):
    f.seek(0)
    declared = {}

    def storage_bytes(pid, nbytes):
        declared.setdefault(pid[2], nbytes)  # the root storage's key
        return pid[2]

    for what in ('magic number', 'protocol', 'system info'):
        _Pickle(f, size, None, zip_ids=False, what=what).run()
    _Pickle(f, size, storage_bytes, zip_ids=False).run()
    _Pickle(f, size, None, zip_ids=False, what='storage keys').run()
    left = size - f.tell()
    if sum(declared.values()) > left:
        raise FileDamaged(f'its storages declare {sum(declared.values())} '
                          f'bytes, {left} bytes of the file are left')


# ---------------------------------------------------------------------------
# The pickle, run over the opcodes of torch's weights-only unpickler
# (torch/_weights_only_unpickler.py) with symbolic results for calls.


class _Global:
    """A GLOBAL of the pickle, by name."""

    def __init__(self, name):
        self.name = name


class _Opaque:
    """What a call returns, where only its kind matters."""

    def __init__(self, what):
        self.what = what


class _Storage:

    def __init__(self, itemsize):
        self.itemsize = itemsize


class _Tensor:
    pass




def _storage_itemsizes():
    """Element size of each storage type a checkpoint may name."""
    sizes = {'torch.UntypedStorage': 1, 'torch.storage.UntypedStorage': 1}
    with warnings.catch_warnings():  # the typed storages are deprecated
        warnings.simplefilter('ignore')
        for name in dir(torch):
            cls = getattr(torch, name)
            if isinstance(cls, type) and cls is not torch.TypedStorage and \
                    issubclass(cls, torch.TypedStorage):
                sizes[f'torch.{name}'] = cls.dtype.itemsize
    return sizes


_STORAGE_ITEMSIZES = _storage_itemsizes()
_TENSOR_REBUILDS = {'torch._utils._rebuild_tensor_v2',
                    'torch._utils._rebuild_tensor_v3'}
_PARAMETER_REBUILDS = {'torch._utils._rebuild_parameter',
                       'torch._utils._rebuild_parameter_with_state'}
# Callables whose result is bounded by their (already bounded) arguments.
_CONTAINERS = {'collections.OrderedDict', 'collections.Counter',
               'builtins.set', 'torch.Size'}
_SCALARS = {'builtins.complex', 'torch.device'}
# mmsoftpool.checkpoint's stand-ins, which check their own arguments.
_STAND_INS = {
    'mmengine.logging.history_buffer.HistoryBuffer', 'builtins.getattr',
    'numpy.dtype', 'numpy.ndarray', 'numpy._core.multiarray._reconstruct',
    'numpy.core.multiarray._reconstruct', 'numpy._core.multiarray.scalar',
    'numpy.core.multiarray.scalar', 'builtins.bytes'
}
_NEW_OBJECTS = _CONTAINERS | _SCALARS | _STAND_INS | {
    'builtins.bytearray', 'torch.nn.parameter.Parameter'}
_LITERALS = (int, float, str, bytes, bool, type(None))


def _itemsize(name):
    if name not in _STORAGE_ITEMSIZES:
        raise FileRefused(f'{name} as a storage type')
    return _STORAGE_ITEMSIZES[name]


def _container(name, args):
    """What the run holds for a call of ``name`` (dicts stay dicts: the
    pickle fills them with SETITEMS)."""
    if name in ('collections.OrderedDict', 'collections.Counter'):
        return {}
    if name == 'torch.Size' and args:
        return tuple(args[0])
    return _Opaque(name)


def _ints(value, what):
    if not (isinstance(value, (tuple, list)) and all(
            type(n) is int for n in value)):
        raise FileRefused(f'a tensor {what} {value!r}')
    return value


class _Pickle:
    """One pickle of the file, run without building anything large."""

    def __init__(self, f, file_size, storage_bytes, zip_ids, what=None):
        self.read, self.readline = f.read, f.readline
        self.storage_bytes = storage_bytes
        self.zip_ids = zip_ids
        self.what = what
        self.budget = TENSOR_BYTES_PER_FILE_BYTE * file_size + \
            TENSOR_BYTES_SLACK
        self.tensor_bytes = 0

    def run(self):
        try:
            return self._run()
        except (FileRefused, FileDamaged):
            raise
        except Exception as err:  # what torch's unpickler would fail on
            raise FileDamaged(f'the pickle is damaged ({type(err).__name__}: '
                              f'{err})') from None

    def _global(self):
        module = self.readline()[:-1].decode('utf-8')
        name = self.readline()[:-1].decode('utf-8')
        if (module, name) in NAME_MAPPING:
            module, name = NAME_MAPPING[(module, name)]
        elif module in IMPORT_MAPPING:
            module = IMPORT_MAPPING[module]
        if self.what is not None:
            raise FileRefused(f'GLOBAL {module}.{name} in the {self.what}')
        return _Global(f'{module}.{name}')

    def _call(self, func, args):
        if not isinstance(func, _Global) or not isinstance(args, tuple):
            raise FileRefused(f'a call of {getattr(func, "what", func)!r}')
        name = func.name
        if name in _TENSOR_REBUILDS:
            return self._tensor(name, args)
        if name in _PARAMETER_REBUILDS:
            if not args or not isinstance(args[0], _Tensor):
                raise FileRefused(f'{name} of something other than a tensor')
            return args[0]
        if name == 'torch._tensor._rebuild_from_type_v2':
            if len(args) != 4 or not isinstance(args[0], _Global) or \
                    args[0].name not in _TENSOR_REBUILDS | _PARAMETER_REBUILDS:
                raise FileRefused(f'{name} with {args!r}')
            return self._call(args[0], tuple(args[2]))
        if name == 'builtins.bytearray':
            # pickle writes a bytearray's content, never its size
            if not all(isinstance(a, (bytes, str)) for a in args):
                raise FileRefused('bytearray of something other than bytes '
                                  f'({args!r})')
            return _Opaque(name)
        if name == '_codecs.encode':
            if len(args) != 2 or type(args[0]) is not str or \
                    args[1] != 'latin1':
                raise FileRefused(f'_codecs.encode{args!r}')
            return args[0].encode('latin1')
        if name in _CONTAINERS:
            # over the pickle's own containers only (iterating a tensor view
            # would make one object per element)
            if not all(isinstance(a, (list, tuple, dict)) for a in args):
                raise FileRefused(f'{name} of {args!r}')
            return _container(name, args)
        if name in _SCALARS:
            if not all(isinstance(a, _LITERALS) for a in args):
                raise FileRefused(f'{name} of {args!r}')
            return _Opaque(name)
        if name in _STAND_INS:
            return _Opaque(name)
        if name.startswith('torch.') and name.endswith(('Tensor', 'Storage')):
            raise FileRefused(f'a call of {name}{args!r}: it allocates what '
                              'the file asks for (a checkpoint\'s tensors are '
                              'rebuilt from its stored records)')
        raise FileRefused(f'a call of {name}, which is not on the allow-list')

    def _tensor(self, name, args):
        if len(args) < 4 or not isinstance(args[0], _Storage):
            raise FileRefused(f'{name} of something other than a storage')
        storage, offset, size, stride = args[:4]
        if type(offset) is not int:
            raise FileRefused(f'a tensor offset {offset!r}')
        itemsize = storage.itemsize
        if name.endswith('_v3'):
            if len(args) < 7 or not isinstance(args[6], _Global) or \
                    not isinstance(getattr(torch, args[6].name[6:], None),
                                   torch.dtype):
                raise FileRefused(f'{name} with dtype {args[6:7]!r}')
            itemsize = getattr(torch, args[6].name[6:]).itemsize
        numel = 1
        for n in _ints(size, 'size'):
            numel *= n
        _ints(stride, 'stride')
        self.tensor_bytes += numel * itemsize
        if self.tensor_bytes > self.budget:
            raise FileRefused(
                f'its tensors add up to more than {self.budget} bytes '
                f'({TENSOR_BYTES_PER_FILE_BYTE} times the file\'s size)')
        return _Tensor()

    def _persistent(self, pid):
        # torch: ('storage', type, key, location, numel) in the zip format,
        # plus the view metadata in the legacy one
        if not (isinstance(pid, tuple) and len(pid) == (5 if self.zip_ids
                                                        else 6)
                and pid[0] == 'storage' and isinstance(pid[1], _Global)
                and type(pid[4]) is int and pid[4] >= 0
                and self.storage_bytes is not None):
            raise FileRefused(f'a persistent id {pid!r}')
        itemsize = _itemsize(pid[1].name)
        self.storage_bytes(pid, pid[4] * itemsize)
        return _Storage(itemsize)

    def _run(self):
        read, stack, metastack, memo = self.read, [], [], {}
        while True:
            key = read(1)
            if not key:
                raise EOFError('the pickle ends without STOP')
            op = key[0]
            if op == pickle.GLOBAL[0]:
                stack.append(self._global())
            elif op == pickle.NEWOBJ[0]:
                args, cls = stack.pop(), stack.pop()
                if not isinstance(cls, _Global) or \
                        cls.name not in _NEW_OBJECTS:
                    raise FileRefused(f'creating {getattr(cls, "name", cls)}')
                if cls.name == 'torch.nn.parameter.Parameter':
                    if not (args == () or (len(args) >= 1 and isinstance(
                            args[0], _Tensor))):
                        raise FileRefused(f'a Parameter of {args!r}')
                    stack.append(args[0] if args else _Tensor())
                else:
                    stack.append(_container(cls.name, ()))
            elif op == pickle.REDUCE[0]:
                args = stack.pop()
                stack[-1] = self._call(stack[-1], args)
            elif op == pickle.BUILD[0]:
                stack.pop()
                if isinstance(stack[-1], (_Tensor, _Storage)):
                    raise FileRefused('a BUILD of a tensor (tensors are '
                                      'rebuilt from their storages)')
            elif op == pickle.APPEND[0]:
                item = stack.pop()
                stack[-1].append(item)
            elif op == pickle.APPENDS[0]:
                items, stack = stack, metastack.pop()
                stack[-1].extend(items)
            elif op == pickle.SETITEM[0]:
                value, k = stack.pop(), stack.pop()
                stack[-1][k] = value
            elif op == pickle.SETITEMS[0]:
                items, stack = stack, metastack.pop()
                for i in range(0, len(items), 2):
                    stack[-1][items[i]] = items[i + 1]
            elif op == pickle.MARK[0]:
                metastack.append(stack)
                stack = []
            elif op == pickle.TUPLE[0]:
                items, stack = stack, metastack.pop()
                stack.append(tuple(items))
            elif op == pickle.TUPLE1[0]:
                stack[-1] = (stack[-1], )
            elif op == pickle.TUPLE2[0]:
                stack[-2:] = [(stack[-2], stack[-1])]
            elif op == pickle.TUPLE3[0]:
                stack[-3:] = [(stack[-3], stack[-2], stack[-1])]
            elif op == pickle.NONE[0]:
                stack.append(None)
            elif op == pickle.NEWFALSE[0]:
                stack.append(False)
            elif op == pickle.NEWTRUE[0]:
                stack.append(True)
            elif op == pickle.EMPTY_TUPLE[0]:
                stack.append(())
            elif op == pickle.EMPTY_LIST[0]:
                stack.append([])
            elif op == pickle.EMPTY_DICT[0]:
                stack.append({})
            elif op == pickle.EMPTY_SET[0]:
                stack.append(_Opaque('set'))
            elif op == pickle.BININT[0]:
                stack.append(struct.unpack('<i', read(4))[0])
            elif op == pickle.BININT1[0]:
                stack.append(read(1)[0])
            elif op == pickle.BININT2[0]:
                stack.append(struct.unpack('<H', read(2))[0])
            elif op == pickle.BINFLOAT[0]:
                stack.append(struct.unpack('>d', read(8))[0])
            elif op == pickle.BINUNICODE[0]:
                length = struct.unpack('<I', read(4))[0]
                data = read(length)
                if len(data) != length:
                    raise EOFError('a string is cut short')
                stack.append(str(data, 'utf-8', 'surrogatepass'))
            elif op == pickle.SHORT_BINSTRING[0]:
                data = read(read(1)[0])
                stack.append(data.decode('utf-8'))
            elif op == pickle.BINPERSID[0]:
                stack.append(self._persistent(stack.pop()))
            elif op in (pickle.BINGET[0], pickle.LONG_BINGET[0]):
                index = (read(1) if op == pickle.BINGET[0] else
                         struct.unpack('<I', read(4)))[0]
                stack.append(memo[index])
            elif op in (pickle.BINPUT[0], pickle.LONG_BINPUT[0]):
                index = (read(1) if op == pickle.BINPUT[0] else
                         struct.unpack('<I', read(4)))[0]
                memo[index] = stack[-1]
            elif op == pickle.LONG1[0]:
                stack.append(pickle.decode_long(read(read(1)[0])))
            elif op == pickle.PROTO[0]:
                read(1)
            elif op == pickle.STOP[0]:
                return stack.pop()
            else:
                raise FileDamaged(f'unsupported pickle opcode {key!r}')
