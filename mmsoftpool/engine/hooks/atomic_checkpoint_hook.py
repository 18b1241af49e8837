import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

from ..atomic_files import write_atomically


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """MMEngine's ``CheckpointHook`` (same arguments) with nothing lost in a
    crash:

    - checkpoints are written through the ``atomic_local`` backend (temporary
      file, fsync, rename) when they go to a local folder and no other
      ``backend_args`` are given;
    - ``last_checkpoint`` is written the same way (MMEngine uses a plain
      ``open('w')``);
    - with ``max_keep_ckpts``, the checkpoints that fall out are deleted only
      after the new one and ``last_checkpoint`` are safely written (MMEngine
      deletes them first, so with ``max_keep_ckpts=1`` a crash during the
      save leaves nothing to resume from).

    ``save_best`` checkpoints keep MMEngine's order (the old best is removed
    before the new one is written, itself atomically).
    """

    def __init__(self, *args, backend_args=None, out_dir=None, **kwargs):
        local = out_dir is None or '://' not in str(out_dir)
        if backend_args is None and kwargs.get('file_client_args') is None \
                and local:
            backend_args = dict(backend='atomic_local')
        super().__init__(
            *args, backend_args=backend_args, out_dir=out_dir, **kwargs)

    def _save_checkpoint_with_step(self, runner, step, meta):
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            # the kept ids are updated first (they are saved in the
            # checkpoint's message hub), the files removed last
            while len(self.keep_ckpt_ids) >= self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        write_atomically(
            osp.join(runner.work_dir, 'last_checkpoint'),
            self.last_ckpt.encode('utf-8'))
        for old_step in outdated:
            path = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(old_step))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed checkpoints
                self.file_backend.rmtree(path)
