"""Option files by composition: one base per model, small overlays, the scale stated once.

BasicSR reads one plain YAML file per run; the files under ``options/`` are compositions that this module turns
into that plain dict by three rules (see docs/options.md): ``_base_: FILE`` or ``[FILE, ...]`` composes the bases
first and merges the file over them, mappings key by key (``_delete_: true`` replaces instead, as in mmengine);
``${key:subkey}`` in a string is another key's value after composition and overrides (a string that is one reference
takes the value's type); top-level keys starting with ``_`` are dropped from the result.

Overrides are BasicSR's ``--force_yml`` entries, ``key:subkey=value`` (values parsed as BasicSR parses them), applied
before the references are resolved, so ``--force_yml scale=2`` moves a whole file to x2. A preset
(``options/presets/``) is a YAML file of such assignments for many files: an assignment lands only where the file has
its parent block, and a block that names a ``type`` only on a block of that type.

Why not mmengine's ``Config`` (already a dependency): its ``{{_base_.key}}`` pulls a value from a base into the file
that inherits it, while here the leaf states the scale and the bases derive from it.

The plain files under ``options/`` for BasicSR's own ``train.py`` / ``test.py`` are generated (:data:`GENERATED`,
``make options``, :mod:`mrsr_plugin.cli.options`); a test checks that each equals its composition.
"""
import itertools
import os
import re

import yaml
from basicsr.utils.options import _postprocess_yml_value

from mrsr_plugin.errors import MRSRUserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = os.path.join(REPO, 'options')
# plain YAML file under options/ <- the composed file it is generated from
GENERATED = {
    'train_mrdab_x4.yml': 'zoo/train_mrdab_x4.yml',
    'train_mrdab_x2.yml': 'zoo/train_mrdab_x2.yml',
    'test_mrdab_x4.yml': 'zoo/test_mrdab_x4.yml',
    'test_mrdab_x2.yml': 'zoo/test_mrdab_x2.yml',
    'train_mrdab_psnr_x4.yml': 'zoo/train_mrdab_psnr_x4.yml',
    'train_mrdab_psnr_x2.yml': 'zoo/train_mrdab_psnr_x2.yml',
    'demo_mrdab_x2.yml': '_base_/demo.yml',
}
# the order of BasicSR's own option files, whatever order the bases give (keys not listed follow in theirs)
KEY_ORDER = {
    '': ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'network_d', 'speed',
         'path', 'train', 'val', 'logger', 'dist_params'),
    'train': ('ema_decay', 'optim_g', 'optim_d', 'scheduler', 'total_iter', 'warmup_iter', 'pixel_opt',
              'perceptual_opt', 'gan_opt', 'net_d_iters', 'net_d_init_iters'),
    'val': ('val_freq', 'save_img', 'suffix', 'metrics'),
}
REFERENCE = re.compile(r'\$\{([^${}]*)\}')


class OptionFileError(MRSRUserError):
    """An option file that cannot be composed, or a bad override: one line naming the file."""


def load_options(path, overrides=(), presets=(), missing='error'):
    """The plain option dict of ``path``: composed, then ``presets`` (files) and ``overrides`` (``key:subkey=value``
    strings) applied, then references resolved. ``missing='skip'`` ignores an override whose parent block the file
    lacks (one override for many files) instead of raising."""
    opt = compose(path)
    for preset in presets:
        _overlay(opt, _read(preset))
    for entry in overrides:
        keys, value = parse_override(entry)
        _assign(opt, keys, value, path, missing)
    return resolve(opt, path)


def option_argument(argv, default=None):
    """The path after ``-opt`` in a BasicSR command line ``argv``, else ``default``."""
    return argv[argv.index('-opt') + 1] if '-opt' in argv[:-1] else default


def is_composed(path):
    """Whether ``path`` needs this module (has ``_base_`` or a ``${...}``): BasicSR reads the others as they are."""
    with open(path) as f:
        text = f.read()
    return re.search(r'^_base_\s*:', text, re.M) is not None or REFERENCE.search(text) is not None


def compose(path, _inside=()):
    """The merged, unresolved dict of ``path`` and its bases."""
    here = os.path.abspath(path)
    if here in _inside:
        raise OptionFileError(f'{_inside[0]}: _base_ loops back to {path}')
    own = _read(path)
    bases = own.pop('_base_', None) or []
    merged = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = merge(merged, compose(os.path.join(os.path.dirname(path), base), _inside + (here, )))
    return merge(merged, own)


def merge(base, over):
    """``over`` merged into a copy of ``base``: mappings key by key (``_delete_: true`` replaces), others replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict):
            value = dict(value)
            inherited = out.get(key) if not value.pop('_delete_', False) else None
            value = merge(inherited if isinstance(inherited, dict) else {}, value)
        out[key] = value
    return out


def parse_override(entry):
    """``'train:ema_decay=0.999'`` -> (('train', 'ema_decay'), 0.999), the value as BasicSR's --force_yml reads it."""
    keys, sep, value = entry.partition('=')
    keys = tuple(k.strip() for k in keys.strip().split(':'))
    if not sep or not all(keys):
        raise OptionFileError(f'--force_yml {entry}: expected key:subkey=value')
    try:
        return keys, _postprocess_yml_value(value.strip())
    except Exception as err:  # BasicSR evaluates '[...]' as Python
        raise OptionFileError(f'--force_yml {entry}: cannot read the value ({err})') from err


def resolve(opt, source):
    """``opt`` with every ``${key:path}`` replaced and the ``_`` keys dropped, top-level keys in BasicSR's order."""

    def lookup(ref, where, stack):
        if ref in stack:
            raise OptionFileError(f'{source}: ${{{ref}}} refers to itself (in {where})')
        node = opt
        for key in ref.split(':'):
            if not isinstance(node, dict) or key not in node:
                raise OptionFileError(f'{source}: ${{{ref}}} in {where} names no key')
            node = node[key]
        return value(node, where, stack + (ref, ))

    def text(ref, where, stack):
        found = lookup(ref, where, stack)
        if found is None or isinstance(found, (dict, list)):
            raise OptionFileError(f'{source}: ${{{ref}}} in {where} is {found!r}, which cannot be part of a string')
        return str(found)

    def value(node, where, stack=()):
        if isinstance(node, dict):
            return {k: value(v, f'{where}:{k}' if where else k, stack) for k, v in node.items()}
        if isinstance(node, list):
            return [value(v, where, stack) for v in node]
        if isinstance(node, str):
            whole = REFERENCE.fullmatch(node)
            if whole:
                return lookup(whole.group(1), where, stack)
            return REFERENCE.sub(lambda m: text(m.group(1), where, stack), node)
        return node

    resolved = _ordered(value(opt, ''), KEY_ORDER[''])
    for block in ('train', 'val'):
        if isinstance(resolved.get(block), dict):
            resolved[block] = _ordered(resolved[block], KEY_ORDER[block])
    return {k: v for k, v in resolved.items() if not k.startswith('_')}


def render(opt, header=()):
    """Plain YAML of ``opt`` as BasicSR's option files are written: comment lines ``header`` first, blocks apart,
    lists in brackets, None as ``~``."""
    lines = [f'# {line}'.rstrip() for line in header] + ['']
    for key, value in opt.items():
        block = yaml.dump({key: value}, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
        lines.append(('\n' if isinstance(value, dict) and lines[-1] else '') + block.rstrip('\n'))
    return '\n'.join(lines).lstrip('\n') + '\n'


def generated_text(target):
    """The text of the GENERATED file ``target`` (relative to options/): a header naming its source, the source's
    own header comments, then the composed options."""
    source = os.path.join(OPTIONS, GENERATED[target])
    note = [f'Generated by `make options` from options/{GENERATED[target]} and its bases: edit those, not this file.',
            'The plugin\'s train.py/test.py also read the composed file directly.', '']
    return render(load_options(source), note + _header(source))


def write_generated(check=False):
    """Rewrite every GENERATED file (``check``: only compare); returns those that were (or would be) changed."""
    stale = []
    for target in GENERATED:
        path, text = os.path.join(OPTIONS, target), generated_text(target)
        current = open(path).read() if os.path.isfile(path) else None
        if current != text:
            stale.append(os.path.relpath(path, REPO))
            if not check:
                with open(path, 'w') as f:
                    f.write(text)
    return stale


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(type(None), lambda dumper, _: dumper.represent_scalar('tag:yaml.org,2002:null', '~'))
_Dumper.add_representer(
    list, lambda dumper, value: dumper.represent_sequence('tag:yaml.org,2002:seq', value, flow_style=True))


def _read(path):
    """The YAML mapping of ``path``; OptionFileError naming the file otherwise."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as err:
        raise OptionFileError(f'{path}: cannot read option file ({err.strerror or err})') from err
    except yaml.YAMLError as err:
        raise OptionFileError(f'{path}: not a YAML option file ({str(err).splitlines()[0]})') from err
    if not isinstance(data, dict):
        raise OptionFileError(f'{path}: not a YAML mapping of options')
    return data


def _header(path):
    """The comment lines at the top of ``path``, without their '# '."""
    with open(path) as f:
        comments = itertools.takewhile(lambda line: line.startswith('#'), f)
        return [line.rstrip('\n').removeprefix('#').removeprefix(' ') for line in comments]


def _ordered(mapping, order):
    return {k: mapping[k] for k in [k for k in order if k in mapping] + [k for k in mapping if k not in order]}


def _assign(opt, keys, value, source, missing):
    node = opt
    for depth, key in enumerate(keys[:-1]):
        if not isinstance(node.get(key), dict):
            if missing == 'skip':
                return
            raise OptionFileError(f'{source}: --force_yml {":".join(keys)}: the file has no block '
                                  f'{":".join(keys[:depth + 1])}')
        node = node[key]
    node[keys[-1]] = value


def _overlay(target, block):
    """A preset ``block`` onto ``target``: leaves where their parent exists; a block with a type only on its type."""
    if 'type' in block and target.get('type') != block['type']:
        return
    for key, value in block.items():
        if not isinstance(value, dict):
            target[key] = value
        elif isinstance(target.get(key), dict):
            _overlay(target[key], value)
