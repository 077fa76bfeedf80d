"""Shared start-up of the plugin's entry points: train and test (Real-ESRGAN style, over BasicSR's pipelines), and
the error handling of every command-line tool."""
import argparse
import os
import sys
import tempfile
from os import path as osp

from mrsr_plugin.errors import MRSRUserError, OptionValueError, first_line
from mrsr_plugin.fsutil import describe_os_error


def experiments_root():
    """Folder that receives ``experiments/``, ``results/`` and ``tb_logger/``.

    The source checkout when the package runs from one (it has a setup.py beside the package), else the current
    folder: never site-packages. ``MRSR_ROOT`` overrides both.
    """
    if os.environ.get('MRSR_ROOT'):
        return osp.abspath(os.environ['MRSR_ROOT'])
    checkout = osp.dirname(osp.dirname(osp.abspath(__file__)))
    return checkout if osp.isfile(osp.join(checkout, 'setup.py')) else os.getcwd()


def run(pipeline):
    """Run ``pipeline(root_path)``; expected user errors end in one line on stderr and exit status 2.

    A composed option file (:mod:`mrsr_plugin.options`) reaches BasicSR as its plain YAML, written to a temporary
    folder under the same file name, with its ``--force_yml`` entries applied before the references are resolved.
    """
    import mrsr_plugin  # noqa: F401  registers the plugin when basicsr is imported
    argv = sys.argv
    try:
        with tempfile.TemporaryDirectory(prefix='mrsr_options_') as folder:
            sys.argv = plain_argv(argv, folder)
            pipeline(experiments_root())
    except (MRSRUserError, FileNotFoundError) as err:
        where = f'{_option_file(argv)}: ' if isinstance(err, OptionValueError) else ''
        print(f'mrsr_plugin: error: {where}{err}', file=sys.stderr)
        sys.exit(2)
    finally:
        sys.argv = argv


def plain_argv(argv, folder):
    """BasicSR's command line ``argv`` as BasicSR can read it: a composed ``-opt`` file replaced by its plain YAML
    in ``folder`` (``--force_yml`` applied to it and dropped); any other command line unchanged."""
    from mrsr_plugin import options  # imports basicsr: only for train/test, not every command line
    path = options.option_argument(argv)
    if path is None or not osp.isfile(path) or not options.is_composed(path):
        return argv  # BasicSR's own parser reads it, --help and its errors included
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    parser.add_argument('--force_yml', nargs='+', default=[])
    args, rest = parser.parse_known_args(argv[1:])
    header = [f'Composed by mrsr_plugin from {args.opt}'] + [f'--force_yml {e}' for e in args.force_yml]
    plain = osp.join(folder, osp.basename(args.opt))
    with open(plain, 'w') as f:
        f.write(options.render(options.load_options(args.opt, args.force_yml), header))
    return [argv[0], '-opt', plain] + rest


def guarded(prog, func, *args, **kwargs):
    """``func(*args, **kwargs)`` for a command-line tool: an expected error (MRSRUserError, or an OSError such as a
    full disk) ends in one line ``prog: error: ...`` on stderr and exit status 2, Ctrl-C in ``prog: interrupted`` and
    exit status 130; no traceback. Bugs still raise."""
    try:
        return func(*args, **kwargs)
    except MRSRUserError as err:
        message = first_line(err)
    except OSError as err:
        message = describe_os_error(err)
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr)
        sys.exit(130)
    print(f'{prog}: error: {message}', file=sys.stderr)
    sys.exit(2)


EXIT_SKIPPED = 1  # the tools over collections (mrsr-prepare, mrsr-infer): done, but some inputs were skipped


def exit_status(prog, report, report_name):
    """Exit status of a tool over a collection of inputs, after its run: 0, or :data:`EXIT_SKIPPED` (with one line
    on stderr saying so) when ``report['skipped']`` holds inputs skipped for a fault of theirs (``fault``)."""
    faults = sum(1 for entry in report['skipped'] if entry.get('fault', True))
    if not faults:
        return 0
    print(f'{prog}: {faults} input{"s" * (faults > 1)} skipped for a fault of {"their" if faults > 1 else "its"} own '
          f'(reasons in {report_name}): exit status {EXIT_SKIPPED}', file=sys.stderr)
    return EXIT_SKIPPED


def _option_file(argv):
    """The path after ``-opt`` in BasicSR's command line."""
    from mrsr_plugin.options import option_argument
    return option_argument(argv, 'the option file')
