"""Run the data pre-flight checks of tools/train.py and tools/test.py alone.

    python tools/misc/check_data.py CONFIG [--splits train val test]
        [--check-images full] [--cfg-options KEY=VALUE ...]

mmdet's own tools run none of these checks. This reports missing or broken
files (exit code 2) and, as warnings, the annotations mmdet's CocoDataset
will drop or take as they are, images its filter_cfg leaves out, and sizes
that disagree with the annotation file. See docs/checkpoints.md.
"""
import mmsoftpool  # noqa: F401  registers the project's types
from mmsoftpool.tools.launch import (
    ToolParser,
    add_cfg_options_arg,
    add_check_images_arg,
    check_data,
    load_config,
    run_tool,
)


def main():
    parser = ToolParser(description='Check the data of a config')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--splits', nargs='+', default=['train', 'val', 'test'],
        choices=['train', 'val', 'test'], help='the dataloaders to check')
    add_check_images_arg(parser)
    add_cfg_options_arg(parser)
    args = parser.parse_args()
    cfg = load_config(args.config, args.cfg_options, None, 'none')
    check_data(cfg, args.splits, args.check_images)
    print(f'{args.config}: the data of {", ".join(args.splits)} is readable')


if __name__ == '__main__':
    run_tool(main)
