"""Helpers shared by the test modules."""
import subprocess
import sys
import textwrap


def run_python(code, *, cwd=None, env=None, check=True, timeout=300):
    """Runs ``code`` in a fresh interpreter, as a user's script would, so a
    crash (or a payload) there cannot touch pytest's process. With ``check``
    a non-zero exit fails the test, showing the signal and stderr."""
    result = subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                            cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check:
        assert result.returncode == 0, (
            f'exit code {result.returncode} (negative: killed by that '
            f'signal)\n{result.stderr[-3000:]}')
    return result
