"""The documentation stays true: README.md and the mkdocs site under docs/.

- the site builds with ``mkdocs build --strict`` (a broken link or anchor, or a page missing from nav, fails);
- every command-line flag the pages give one of the project's commands exists in that command's argument parser;
- the measured tables equal a fresh rendering from their runs' files (scripts/docs_tables.py);
- README.md stays short and its relative links point at files that exist.
"""
import argparse
import contextlib
import functools
import importlib
import importlib.util
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import warnings

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --- the table of commands --------------------------------------------------------------------------------------------
# The project's commands as users type them -> how this test reaches their argparse parser, in this process:
#   ('console', NAME): the console script NAME, through the entry point setup.py declares for it;
#   ('script', PATH):  runpy.run_path(PATH) as __main__ (PATH relative to the checkout);
#   ('module', NAME):  runpy.run_module(NAME) as __main__ (``python -m NAME``, or BasicSR's basicsr/train.py).
# When a command or one of its flags changes (e.g. benchmark_zoo.py's --set giving way to --force_yml), edit this
# table and the pages; nothing else in this file knows the commands.
COMMANDS = {
    'mrsr-infer': ('console', 'mrsr-infer'),
    'mrsr-prepare': ('console', 'mrsr-prepare'),
    'mrsr-evaluate': ('console', 'mrsr-evaluate'),
    'mrsr-selfcheck': ('console', 'mrsr-selfcheck'),
    'mrsr-train': ('console', 'mrsr-train'),
    'mrsr-test': ('console', 'mrsr-test'),
    'mrsr_plugin/train.py': ('script', 'mrsr_plugin/train.py'),
    'mrsr_plugin/test.py': ('script', 'mrsr_plugin/test.py'),
    'basicsr/train.py': ('module', 'basicsr.train'),
    'basicsr/test.py': ('module', 'basicsr.test'),
    'mrsr-weights': ('console', 'mrsr-weights'),
    'mrsr-benchmark-zoo': ('console', 'mrsr-benchmark-zoo'),
    'mrsr-reproduce': ('console', 'mrsr-reproduce'),
    'scripts/inference.py': ('script', 'scripts/inference.py'),
    'scripts/lmdb_prepare.py': ('script', 'scripts/lmdb_prepare.py'),
    'scripts/evaluate.py': ('script', 'scripts/evaluate.py'),
    'scripts/evaluate_through_plane.py': ('script', 'scripts/evaluate_through_plane.py'),
    'scripts/benchmark_zoo.py': ('script', 'scripts/benchmark_zoo.py'),
    'scripts/reproduce_paper.py': ('script', 'scripts/reproduce_paper.py'),
    'scripts/benchmark_speed.py': ('script', 'scripts/benchmark_speed.py'),
    'scripts/benchmark_data.py': ('script', 'scripts/benchmark_data.py'),
    'scripts/benchmark_prepare.py': ('script', 'scripts/benchmark_prepare.py'),
    'scripts/benchmark_infer_memory.py': ('script', 'scripts/benchmark_infer_memory.py'),
    'scripts/wheelhouse.py': ('script', 'scripts/wheelhouse.py'),
    'scripts/docs_tables.py': ('script', 'scripts/docs_tables.py'),
    'scripts/fuzz_inputs.py': ('script', 'scripts/fuzz_inputs.py'),
    'mrsr_plugin.cli.options': ('module', 'mrsr_plugin.cli.options'),
}
# a script named without its folder in prose (`lmdb_prepare.py`) is the same command
ALIASES = {os.path.basename(name): name for name in COMMANDS if name.startswith('scripts/')}
# flags of other programs (pip, torch.distributed.launch) that pages mention in inline code
FOREIGN_FLAGS = {'--no-build-isolation', '--no-index', '--find-links', '--local-rank'}
README_MAX_LINES = 250

# --- reaching a parser ------------------------------------------------------------------------------------------------


class _Captured(BaseException):
    """Raised instead of parsing; a BaseException so that no entry point's error handling catches it."""

    def __init__(self, parser):
        super().__init__(parser.prog)
        self.parser = parser


@contextlib.contextmanager
def _capture_parser(argv):
    original = argparse.ArgumentParser.parse_known_args
    saved_argv, saved_path = sys.argv, list(sys.path)

    def capture(self, args=None, namespace=None):
        raise _Captured(self)

    argparse.ArgumentParser.parse_known_args = capture
    sys.argv = argv
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_known_args = original
        sys.argv, sys.path[:] = saved_argv, saved_path


def _console_scripts():
    """{name: 'module:function'} of setup.py's console_scripts."""
    with open(os.path.join(REPO, 'setup.py')) as f:
        return dict(re.findall(r"'(mrsr-[\w-]+)\s*=\s*([\w.]+:\w+)'", f.read()))


@functools.lru_cache(maxsize=None)
def command_flags(command):
    """The option strings that ``COMMAND --help`` lists (its parser's, suppressed ones left out)."""
    kind, target = COMMANDS[command]
    with _capture_parser([target, '--help']):
        try:
            if kind == 'console':
                module, function = _console_scripts()[target].split(':')
                getattr(importlib.import_module(module), function)()
            elif kind == 'script':
                path = os.path.join(REPO, target)
                sys.path.insert(0, os.path.dirname(path))  # as `python PATH` does
                runpy.run_path(path, run_name='__main__')
            else:
                with warnings.catch_warnings():  # runpy's note that the module was imported with its package
                    warnings.simplefilter('ignore', RuntimeWarning)
                    runpy.run_module(target, run_name='__main__', alter_sys=True)
        except _Captured as captured:
            return _option_strings(captured.parser)
    raise AssertionError(f'{command}: no argparse parser was reached with --help')


def _option_strings(parser):
    flags = set()
    for action in parser._actions:
        if action.help != argparse.SUPPRESS:
            flags.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _option_strings(sub)
    return flags


# --- reading the pages ------------------------------------------------------------------------------------------------

FENCE = re.compile(r'^```(\w*)[^\n]*\n(.*?)^```', re.M | re.S)
SHELL_LANGUAGES = {'', 'bash', 'sh', 'shell', 'console'}
CODE_SPAN = re.compile(r'(`+)(.+?)\1', re.S)
FLAG = re.compile(r'^--?[A-Za-z][\w-]*$')
SHELL_OPERATORS = {';', '&&', '||', '|', '&', '(', ')'}


def _tokens(text):
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=';&|()')
        lexer.whitespace_split, lexer.commenters = True, '#'
        return list(lexer)
    except ValueError:  # an unbalanced quote in prose
        return text.split()


def _command_of(token):
    if token in COMMANDS:
        return token
    if token in ALIASES:
        return ALIASES[token]
    return next((name for name in COMMANDS if '/' in name and token.endswith('/' + name)), None)


def flag_mentions(text):
    """Flags that ``text`` (Markdown) gives commands.

    Returns (attached, bare, commands): ``attached`` lists (command, flag, snippet) for flags after a command in a
    shell code block or an inline code span; ``bare`` lists (flag, snippet) for inline code that starts with a flag
    (`--tile`), which belongs to one of the page's commands; ``commands`` is the set of commands the page names.
    """
    attached, bare, commands = [], [], set()

    def scan(snippet):
        command = None
        for token in _tokens(snippet):
            if token in SHELL_OPERATORS:
                command = None
                continue
            found = _command_of(token)
            if found:
                command = found
                commands.add(found)
                continue
            flag = token.split('=', 1)[0]
            if command and FLAG.match(flag):
                attached.append((command, flag, snippet.strip()))

    blocks = []
    for match in FENCE.finditer(text):
        blocks.append(match.span())
        if match.group(1) in SHELL_LANGUAGES:
            for line in match.group(2).replace('\\\n', ' ').splitlines():
                scan(line)
    prose = ''.join(text[start:end] if i % 2 == 0 else '\n'
                    for i, (start, end) in enumerate(_gaps(blocks, len(text))))
    for match in CODE_SPAN.finditer(prose):
        span = match.group(2)
        tokens = _tokens(span)
        if tokens and FLAG.match(tokens[0].split('=', 1)[0]):
            bare += [(t.split('=', 1)[0], span) for t in tokens if FLAG.match(t.split('=', 1)[0])]
        else:
            scan(span)
    return attached, bare, commands


def _gaps(spans, length):
    """Alternating (outside, inside) ranges of ``spans`` over [0, length)."""
    ranges, position = [], 0
    for start, end in spans:
        ranges += [(position, start), (start, end)]
        position = end
    return ranges + [(position, length)]


def unknown_flags(text):
    """Messages for the flags of ``text`` that no parser of theirs has."""
    attached, bare, commands = flag_mentions(text)
    problems = [f'{command} has no {flag}  (in: {snippet})' for command, flag, snippet in attached
                if flag not in command_flags(command)]
    candidates = commands or set(COMMANDS)
    known = set().union(*(command_flags(c) for c in candidates)) | FOREIGN_FLAGS
    problems += [f'none of {", ".join(sorted(candidates))} has {flag}  (in: `{snippet}`)' for flag, snippet in bare
                 if flag not in known]
    return problems


def _pages():
    pages = ['README.md']
    for folder, _, files in os.walk(os.path.join(REPO, 'docs')):
        pages += [os.path.relpath(os.path.join(folder, f), REPO) for f in files
                  if f.endswith('.md') and 'reproduce_cpu' not in folder]
    return sorted(pages)


def _read(page):
    with open(os.path.join(REPO, page), encoding='utf-8') as f:
        return f.read()


def _docs_tables():
    spec = importlib.util.spec_from_file_location('docs_tables', os.path.join(REPO, 'scripts', 'docs_tables.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the tests --------------------------------------------------------------------------------------------------------


def _mkdocs_build(config, site):
    env = dict(os.environ, NO_MKDOCS_2_WARNING='1')
    return subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '-f', str(config), '-d', str(site)],
                          capture_output=True, text=True, env=env)


def test_site_builds_strictly(tmp_path):
    proc = _mkdocs_build(os.path.join(REPO, 'mkdocs.yml'), tmp_path / 'site')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / 'site' / 'zoo' / 'index.html').is_file()


def test_strict_build_fails_on_a_broken_link_and_a_page_outside_nav(tmp_path):
    shutil.copy(os.path.join(REPO, 'mkdocs.yml'), tmp_path)
    shutil.copytree(os.path.join(REPO, 'docs'), tmp_path / 'docs')
    (tmp_path / 'docs' / 'orphan.md').write_text('# Orphan\n')
    with open(tmp_path / 'docs' / 'index.md', 'a') as f:
        f.write('\n[gone](no_such_page.md)\n')
    proc = _mkdocs_build(tmp_path / 'mkdocs.yml', tmp_path / 'site')
    assert proc.returncode != 0
    assert 'orphan.md' in proc.stderr and 'no_such_page.md' in proc.stderr, proc.stderr


def test_every_command_of_the_table_has_a_parser():
    for command in COMMANDS:
        assert {'-h', '--help'} <= command_flags(command), command


@pytest.mark.parametrize('page', _pages())
def test_flags_in_the_docs_exist(page):
    assert unknown_flags(_read(page)) == []


def test_flag_check_finds_a_missing_flag():
    text = ('```bash\npython scripts/evaluate.py -w W --data D --bogus-flag \\\n    --split test\n```\n'
            'Use `mrsr-infer --no-such-option` or `--percentiles` / `--made-up`.\n')
    attached, bare, commands = flag_mentions(text)
    assert [(command, flag) for command, flag, _ in attached] == [
        ('scripts/evaluate.py', '-w'), ('scripts/evaluate.py', '--data'), ('scripts/evaluate.py', '--bogus-flag'),
        ('scripts/evaluate.py', '--split'), ('mrsr-infer', '--no-such-option')]
    assert commands == {'scripts/evaluate.py', 'mrsr-infer'}
    assert [flag for flag, _ in bare] == ['--percentiles', '--made-up']
    problems = unknown_flags(text)
    assert len(problems) == 3
    assert 'scripts/evaluate.py has no --bogus-flag' in problems[0]
    assert 'mrsr-infer has no --no-such-option' in problems[1]
    assert '--made-up' in problems[2]


def test_generated_tables_equal_their_runs():
    assert _docs_tables().stale_pages(REPO) == [], 'run python scripts/docs_tables.py'


def test_generated_tables_follow_their_run_files(tmp_path):
    docs_tables = _docs_tables()
    shutil.copy(os.path.join(REPO, 'README.md'), tmp_path)
    shutil.copytree(os.path.join(REPO, 'docs'), tmp_path / 'docs')
    results = tmp_path / 'docs' / 'results' / 'demo_seeds.json'
    results.write_text(results.read_text().replace('28.215', '28.999'))
    assert docs_tables.stale_pages(str(tmp_path), write=True) == ['README.md', os.path.join('docs', 'demo.md')]
    assert '28.999 dB' in (tmp_path / 'README.md').read_text()
    assert docs_tables.stale_pages(str(tmp_path)) == []
    page = tmp_path / 'docs' / 'demo.md'
    page.write_text(page.read_text() + '\n<!-- generated:no-such-table -->\n<!-- /generated -->\n')
    with pytest.raises(docs_tables.DocsTablesError, match='no-such-table'):
        docs_tables.stale_pages(str(tmp_path))


def test_readme_is_short_and_its_links_resolve():
    text = _read('README.md')
    assert len(text.splitlines()) <= README_MAX_LINES
    links = re.findall(r'\]\(([^)\s]+)\)', text)
    local = [link.split('#')[0] for link in links if not re.match(r'[a-z]+:', link)]
    assert local, 'README.md links into docs/'
    missing = [link for link in local if not os.path.exists(os.path.join(REPO, link))]
    assert missing == []
