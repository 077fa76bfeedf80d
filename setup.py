"""Packaging of mrsr_plugin.

Besides the package, the distribution installs ``mrsr_plugin_hook.py`` and ``mrsr_plugin_hook.pth`` at the top of
site-packages: the .pth line runs at interpreter start and arranges for the plugin to register itself whenever
``basicsr`` is imported (see mrsr_plugin_hook.py). Regular installs get the .pth through build_py; PEP 660
editable installs (``pip install -e .``) through editable_wheel, which builds no regular build_lib.
"""
import base64
import hashlib
import os
import zipfile
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HERE = Path(__file__).parent
PTH_NAME = 'mrsr_plugin_hook.pth'


def read_version():
    namespace = {}
    exec((HERE / 'mrsr_plugin' / 'version.py').read_text(), namespace)
    return namespace['__version__']


class BuildPyWithPth(build_py):
    """Copies the .pth file next to the top-level modules of the wheel."""

    def run(self):
        super().run()
        if not self.editable_mode:
            self.copy_file(str(HERE / PTH_NAME), os.path.join(self.build_lib, PTH_NAME))


class EditableWheelWithPth(editable_wheel):
    """Adds the .pth file, with its RECORD line, to the editable wheel."""

    def run(self):
        super().run()
        data = (HERE / PTH_NAME).read_bytes()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
        for wheel in Path(self.dist_dir).glob('*.whl'):
            with zipfile.ZipFile(wheel) as src:
                entries = [(info, src.read(info.filename)) for info in src.infolist()]
            tmp = wheel.with_suffix('.tmp')
            with zipfile.ZipFile(tmp, 'w', zipfile.ZIP_DEFLATED) as dst:
                for info, payload in entries:
                    if info.filename.endswith('.dist-info/RECORD'):
                        payload += f'{PTH_NAME},sha256={digest},{len(data)}\n'.encode()
                    dst.writestr(info, payload)
                dst.writestr(PTH_NAME, data)
            os.replace(tmp, wheel)


setup(
    name='mrsr_plugin',
    version=read_version(),
    description='MR image super-resolution for BasicSR: the MRDAB-GAN of GUAN et al. (2025) as a BasicSR plugin',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['mrsr_plugin', 'mrsr_plugin.*']),
    py_modules=['mrsr_plugin_hook'],
    # the weights manifest, and the small checkpoints it may name (mrsr_plugin/weights.py)
    package_data={'mrsr_plugin': ['weights.yml', 'checkpoints/*.pth']},
    install_requires=[
        # 2.6: torch.load defaults to weights_only=True (a pickle payload in a checkpoint does not run; the plugin
        # passes it explicitly too), torch.serialization.safe_globals (BasicSR's training states hold a Counter);
        # 2.3: torch.amp.GradScaler(device), torch.compiler.is_compiling, nn.Module.compile
        'torch>=2.6',
        'torchvision',
        'basicsr==1.4.2',
        'mmengine',
        'opencv-python',
        'pydicom>=3.0',
        'lmdb',
        'numpy',
        'pyyaml',
        # volume files (NIfTI, MHA/MHD, NRRD) in lmdb_prepare.py and mrsr-infer; also a second DICOM reader in tests
        'SimpleITK>=2.2',
        # MR-validated image-quality metrics (MS-SSIM, HaarPSI, VSI, GMSD, ...) rather than hand-written copies
        'piq>=0.8',
    ],
    # pydicom-data: pydicom's larger real MR test files; mkdocs: the documentation site (make docs), which a test
    # builds in strict mode
    extras_require={
        'test': ['pytest', 'pytest-xdist', 'pydicom-data', 'mkdocs>=1.6', 'mkdocs-material'],
        'docs': ['mkdocs>=1.6', 'mkdocs-material'],
    },
    entry_points={
        'console_scripts': [
            'mrsr-train = mrsr_plugin.train:main', 'mrsr-test = mrsr_plugin.test:main',
            'mrsr-prepare = mrsr_plugin.cli.prepare:main', 'mrsr-infer = mrsr_plugin.cli.infer:main',
            'mrsr-evaluate = mrsr_plugin.cli.evaluate:main', 'mrsr-selfcheck = mrsr_plugin.cli.selfcheck:main',
            'mrsr-benchmark-zoo = mrsr_plugin.cli.benchmark_zoo:main', 'mrsr-reproduce = mrsr_plugin.cli.reproduce_paper:main',
            'mrsr-weights = mrsr_plugin.cli.weights:main', 'mrsr-fetch-vgg = mrsr_plugin.cli.fetch_vgg:main'
        ]
    },
    cmdclass={'build_py': BuildPyWithPth, 'editable_wheel': EditableWheelWithPth},
    zip_safe=False,
)
