"""Which checkpoint ``--resume`` (without a path) should continue from.

MMEngine resumes from the file named in ``work_dir/last_checkpoint``; if that
file was cut short (disk full, an interrupted copy), resuming fails although
an intact earlier checkpoint may lie beside it. :func:`find_resumable_checkpoint`
follows ``last_checkpoint`` when it names a whole file, falls back to the
newest whole checkpoint of the same kind otherwise, and says which and why.
"""
import os
import os.path as osp
import re
from typing import List, NamedTuple, Optional, Tuple

from mmsoftpool.checkpoint import DamagedCheckpoint, load

# the names CheckpointHook's default filename_tmpl gives
_STEP_NAME = re.compile(r'(epoch|iter)_(\d+)\.pth')


def why_not_resumable(path: str) -> Optional[str]:
    """Why ``path`` cannot be resumed from, or None if it can.

    "Whole" means what resuming needs: safe loading
    (:func:`mmsoftpool.checkpoint.load`) reads it, which also checks the
    archive's layout and every record's CRC, in time and memory bounded by
    the file's size. A file safe loading refuses (a forged one) raises
    :class:`~mmsoftpool.checkpoint.RefusedCheckpoint`: that is not damage
    to fall back from.
    """
    if not osp.isfile(path):
        return 'it does not exist'
    try:
        load(path, map_location='cpu')
    except (DamagedCheckpoint, FileNotFoundError) as err:
        return str(err)
    return None


class ResumePoint(NamedTuple):
    """The checkpoint to resume from (None if there is none), why it was
    chosen, and the (path, reason) of each checkpoint tried and skipped."""
    path: Optional[str]
    reason: str
    skipped: List[Tuple[str, str]]

    def describe(self) -> str:
        """One line for the log: which file and why."""
        if self.path is None:
            return self.reason
        return f'resuming from {self.path!r} ({self.reason})'


def _steps(folders, kind=None):
    """The ``epoch_N.pth`` / ``iter_N.pth`` files of ``folders`` (of one
    kind if given), newest first: by modification time, then by N."""
    found = {}
    for folder in folders:
        if not osp.isdir(folder):
            continue
        for name in os.listdir(folder):
            match = _STEP_NAME.fullmatch(name)
            path = osp.join(folder, name)
            if match and (kind is None or match.group(1) == kind) and \
                    osp.isfile(path):
                found.setdefault(
                    osp.abspath(path),
                    (os.stat(path).st_mtime_ns, int(match.group(2)), path))
    return [path for _, _, path in sorted(found.values(), reverse=True)]


def find_resumable_checkpoint(work_dir: str) -> ResumePoint:
    """The checkpoint of ``work_dir`` to resume from.

    1. the file ``last_checkpoint`` names, if it is whole;
    2. otherwise the newest whole checkpoint of the same kind (epoch or
       iteration; the two are not one order) in ``work_dir`` and in the
       folder ``last_checkpoint`` points into; without ``last_checkpoint``,
       the newest whole ``epoch_N.pth`` or ``iter_N.pth``. Newest is by
       modification time, then by N: an earlier run's ``epoch_3.pth`` left in
       the folder is older than this run's ``epoch_1.pth``.
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = None
    if osp.isfile(pointer):
        with open(pointer, encoding='utf-8', errors='replace') as f:
            named = f.read().strip() or None
    skipped, folders, kind = [], [work_dir], None
    if named:
        reason = why_not_resumable(named)
        if reason is None:
            return ResumePoint(named, f'named by {pointer}', [])
        skipped.append((named, reason))
        folders.insert(0, osp.dirname(named) or work_dir)
        match = _STEP_NAME.fullmatch(osp.basename(named))
        kind = match.group(1) if match else None
    for path in _steps(folders, kind):
        if named and osp.abspath(path) == osp.abspath(named):
            continue
        reason = why_not_resumable(path)
        if reason is None:
            why = f'the newest whole {kind or "epoch or iteration"} checkpoint'
            if named:
                why += f'; {named!r}, named by {pointer}, is damaged'
            return ResumePoint(path, why, skipped)
        skipped.append((path, reason))
    return ResumePoint(
        None, f'no whole checkpoint in {work_dir!r}'
        + (f' ({len(skipped)} damaged)' if skipped else ''), skipped)
