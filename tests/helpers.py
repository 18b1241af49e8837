"""Helpers shared by the test modules."""
import subprocess
import sys
import textwrap

# The generator arguments of the tiny demo sets the tests make (96x96 images).
TINY_DEMO = dict(num_train=2, num_val=2, image_size=96)


def tiny_demo_overrides(data_root):
    """Config lines that point a detection demo config at a tiny generated
    set under ``data_root`` (made with ``TINY_DEMO``), for one epoch, keeping
    every box so that a barely trained model still gets COCO metrics."""
    return textwrap.dedent(f"""\
        data_root = {data_root!r}
        # the generator's arguments of the data: checked on use
        dataset = dict(data_root=data_root, **{TINY_DEMO!r})
        train_dataloader = dict(batch_size=2, dataset=dataset)
        val_dataloader = dict(batch_size=2, dataset=dataset)
        test_dataloader = val_dataloader
        val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
        test_evaluator = val_evaluator
        train_cfg = dict(max_epochs=1, val_interval=1)
        model = dict(test_cfg=dict(score_thr=0.0))
        """)


def run_python(code, *, args=(), cwd=None, env=None, check=True, timeout=300):
    """Runs ``code`` in a fresh interpreter, as a user's script would, so a
    crash (or a payload) there cannot touch pytest's process. With ``check``
    a non-zero exit fails the test, showing the signal and stderr."""
    result = subprocess.run([sys.executable, '-c', textwrap.dedent(code),
                             *args],
                            cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check:
        assert result.returncode == 0, (
            f'exit code {result.returncode} (negative: killed by that '
            f'signal)\n{result.stderr[-3000:]}')
    return result
