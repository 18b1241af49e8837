"""Test (and evaluate) a detector or classifier checkpoint; see
mmsoftpool/tools/test.py (also `python -m mmsoftpool.tools.test`,
`mmsoftpool-test`, `mim test mmsoftpool`)."""
from mmsoftpool.tools.test import cli, main  # noqa: F401  main: for scripts that run it

if __name__ == '__main__':
    cli()
