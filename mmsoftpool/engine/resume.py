"""Which checkpoint ``--resume`` (without a path) should continue from.

MMEngine resumes from the file named in ``work_dir/last_checkpoint``; if that
file was cut short (disk full, an interrupted copy), resuming fails although
an intact earlier checkpoint may lie beside it. :func:`find_resumable_checkpoint`
returns the newest checkpoint that is whole and the ones it skipped, with why.
"""
import os
import os.path as osp
import re
import zipfile
from typing import List, Optional, Tuple

# the names CheckpointHook's default filename_tmpl gives
_STEP_NAME = re.compile(r'(epoch|iter)_(\d+)\.pth')


def damage(path: str) -> Optional[str]:
    """Why ``path`` is not a whole torch.save file, or None if it is.

    torch.save writes a zip archive: a file cut short loses its central
    directory, and damaged data fails its CRC. Reading every member's CRC
    costs one pass over the file, far less than loading it.
    """
    if not osp.isfile(path):
        return 'it does not exist'
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f'{osp.getsize(path)} bytes, not a whole zip archive ({err})'
    if bad is not None:
        return f'its member {bad} fails its CRC check'
    return None


def find_resumable_checkpoint(
        work_dir: str) -> Tuple[Optional[str], List[Tuple[str, str]]]:
    """The newest whole checkpoint of ``work_dir`` and the (path, reason)
    of each newer one skipped.

    Candidates, newest first: the ``epoch_N.pth`` / ``iter_N.pth`` files
    of ``work_dir`` and of the folder ``last_checkpoint`` points into, by
    decreasing N, after the file ``last_checkpoint`` names if its name has
    another form. (A crash between writing a checkpoint and updating
    ``last_checkpoint`` leaves the pointer one step behind.)
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    named, folders = None, [work_dir]
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip() or None
        if named:
            folders.insert(0, osp.dirname(named))
    numbered = {}
    for folder in folders:
        if osp.isdir(folder):
            for name in os.listdir(folder):
                match = _STEP_NAME.fullmatch(name)
                path = osp.join(folder, name)
                if match:
                    numbered.setdefault(osp.abspath(path),
                                        (int(match.group(2)), path))
    candidates = [path for _, path in sorted(numbered.values(), reverse=True)]
    if named and osp.abspath(named) not in numbered:
        candidates.insert(0, named)
    skipped = []
    for path in candidates:
        reason = damage(path)
        if reason is None:
            return path, skipped
        skipped.append((path, reason))
    return None, skipped
