"""Train a detector or classifier from an MMEngine config; see
mmsoftpool/tools/train.py (also `python -m mmsoftpool.tools.train`,
`mmsoftpool-train`, `mim train mmsoftpool`)."""
from mmsoftpool.tools.train import cli, main  # noqa: F401  main: for scripts that run it

if __name__ == '__main__':
    cli()
