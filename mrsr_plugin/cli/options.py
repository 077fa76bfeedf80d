"""``python -m mrsr_plugin.cli.options``: print a composed option file as the plain YAML BasicSR reads, or
regenerate the plain files under options/ (``make options``); the composition itself: :mod:`mrsr_plugin.options`.

    python -m mrsr_plugin.cli.options options/zoo/train_edsr_x4.yml --force_yml scale=2 -o edsr_x2.yml
    python -m mrsr_plugin.cli.options --write       # or --check: exit 1 if a generated file is not current
"""
import argparse
import sys

from mrsr_plugin.cli.common import guarded
from mrsr_plugin.options import load_options, render, write_generated


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m mrsr_plugin.cli.options', description=__doc__.splitlines()[0])
    p.add_argument('file', nargs='?', help='option file to print as plain YAML')
    p.add_argument('--force_yml', nargs='+', default=[], metavar='KEY:SUBKEY=VALUE', help='overrides, as BasicSR')
    p.add_argument('-o', '--output', help='write the plain YAML here instead of printing it')
    p.add_argument('--write', action='store_true', help='regenerate the generated files under options/')
    p.add_argument('--check', action='store_true', help='exit 1 if a generated file is not current')
    args = p.parse_args(argv)
    if args.write or args.check:
        stale = write_generated(check=args.check)
        print('\n'.join(f'{"stale" if args.check else "written"}: {path}' for path in stale) or 'all current')
        sys.exit(1 if args.check and stale else 0)
    if not args.file:
        p.error('give an option file, --write or --check')
    options = guarded('mrsr_plugin.options', load_options, args.file, args.force_yml)
    text = render(options, [f'Composed from {args.file} by mrsr_plugin.options'] +
                  [f'--force_yml {entry}' for entry in args.force_yml])
    if args.output:
        with open(args.output, 'w') as f:
            f.write(text)
    else:
        print(text, end='')


if __name__ == '__main__':
    main()
