"""The startup hook: the plugin registers itself whenever basicsr is imported, and costs nothing otherwise."""
import os
import site
import sysconfig

from conftest import run_python

REGISTERED = ('from basicsr.utils.registry import ARCH_REGISTRY as A; '
              'print("MRDABNet" in A, "BNINDiscriminator" in A)')


def test_pth_file_is_installed():
    purelib = sysconfig.get_paths()['purelib']
    assert os.path.isfile(os.path.join(purelib, 'mrsr_plugin_hook.pth')), (purelib, site.getsitepackages())


def test_plain_import_basicsr_registers_the_plugin(tmp_path):
    proc = run_python(['-c', f'import basicsr; {REGISTERED}'], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.strip().endswith('True True')


def test_importing_a_basicsr_submodule_first_also_registers(tmp_path):
    proc = run_python(['-c', f'import basicsr.archs.edsr_arch; {REGISTERED}'], cwd=tmp_path)
    assert proc.stdout.strip().endswith('True True'), proc.stdout


def test_importing_the_plugin_first_registers_once(tmp_path):
    proc = run_python(['-c', f'import mrsr_plugin.archs.mrdab_arch; import basicsr; import mrsr_plugin; {REGISTERED}'],
                      cwd=tmp_path)
    assert proc.stdout.strip().endswith('True True'), proc.stdout


def test_interpreter_start_imports_no_torch(tmp_path):
    proc = run_python(['-c', 'import sys; print("torch" in sys.modules, "mrsr_plugin_hook" in sys.modules, '
                       '"mrsr_plugin" in sys.modules)'], cwd=tmp_path)
    assert proc.stdout.split() == ['False', 'True', 'False']


def test_disable_switch(tmp_path):
    code = 'import sys; print(any(type(f).__name__ == "BasicsrImportHook" for f in sys.meta_path))'
    assert run_python(['-c', code], cwd=tmp_path).stdout.strip() == 'True'
    assert run_python(['-c', code], cwd=tmp_path, env={'MRSR_PLUGIN_DISABLE': '1'}).stdout.strip() == 'False'


def test_basicsr_loader_is_restored(tmp_path):
    proc = run_python(['-c', 'import basicsr; print(type(basicsr.__loader__).__name__, '
                       'type(basicsr.__spec__.loader).__name__)'], cwd=tmp_path)
    assert proc.stdout.split()[-2:] == ['SourceFileLoader', 'SourceFileLoader']


def test_importing_a_dataset_module_first_registers_every_dataset(tmp_path):
    """mrsr_plugin.data imports no dataset (lmdb_prepare needs its degradations without torch or BasicSR); the
    registration imports them when basicsr is imported, also from inside the import of one of them."""
    for module in ('prostate_mr_dataset', 'through_plane_dataset', 'degradations'):
        proc = run_python(['-c', f'import mrsr_plugin.data.{module}; import basicsr; '
                           'from basicsr.utils.registry import DATASET_REGISTRY as D; '
                           'print("ProstateMRPairedDataset" in D, "ProstateMRThroughPlaneDataset" in D)'],
                          cwd=tmp_path)
        assert proc.stdout.strip().endswith('True True'), (module, proc.stdout)
