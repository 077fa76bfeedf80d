"""The BasicSR 1.4.2 workarounds of mrsr_plugin.compat: each repairs what it claims and is idempotent.

Resume and DDP on CPU are exercised end to end in test_training.py (they fail there without their fix)."""
import importlib.machinery
import os
import socket
import subprocess
import time
import urllib.error

import basicsr.train
import pytest
import torch
from basicsr.archs import vgg_arch
from basicsr.models.base_model import BaseModel
from basicsr.utils import dist_util, options
from conftest import run_python

from mrsr_plugin import compat
from mrsr_plugin.errors import MRSRUserError, WeightsMissingError


def test_functional_tensor_alias_only_where_torchvision_lacks_it():
    import torchvision.transforms.functional_tensor as alias
    real = importlib.machinery.PathFinder.find_spec('torchvision.transforms.functional_tensor',
                                                    __import__('torchvision.transforms').transforms.__path__)
    assert hasattr(alias, 'rgb_to_grayscale')
    assert ('torchvision_functional_tensor' in compat.APPLIED) == (real is None)


def test_import_basicsr_needs_the_alias_on_current_torchvision(tmp_path):
    """Without the plugin's hook, BasicSR 1.4.2 cannot be imported at all on torchvision >= 0.17."""
    probe = 'import importlib.util as u; print(u.find_spec("torchvision.transforms.functional_tensor") is None)'
    missing = run_python(['-c', probe], cwd=tmp_path, env={'MRSR_PLUGIN_DISABLE': '1'}).stdout.strip().endswith('True')
    if not missing:
        pytest.skip('this torchvision still ships functional_tensor')
    plain = run_python(['-c', 'import basicsr'], cwd=tmp_path, env={'MRSR_PLUGIN_DISABLE': '1'})
    assert plain.returncode != 0 and 'functional_tensor' in plain.stdout
    fixed = run_python(['-c', 'from mrsr_plugin import compat; compat.install_import_fixes(); import basicsr'],
                       cwd=tmp_path, env={'MRSR_PLUGIN_DISABLE': '1'})
    assert fixed.returncode == 0, fixed.stdout


def test_runtime_fixes_are_idempotent():
    before = (options.parse_options, basicsr.train.parse_options, dist_util._init_dist_pytorch,
              dist_util._init_dist_slurm, BaseModel.model_to_device, vgg_arch.VGGFeatureExtractor.__init__,
              vgg_arch.VGGFeatureExtractor.forward, BaseModel.save_network, BaseModel.save_training_state,
              BaseModel.load_network)
    compat.apply_runtime_fixes()
    compat.apply_runtime_fixes()
    after = (options.parse_options, basicsr.train.parse_options, dist_util._init_dist_pytorch,
             dist_util._init_dist_slurm, BaseModel.model_to_device, vgg_arch.VGGFeatureExtractor.__init__,
             vgg_arch.VGGFeatureExtractor.forward, BaseModel.save_network, BaseModel.save_training_state,
             BaseModel.load_network)
    assert before == after


def test_parse_options_swaps_in_the_cpu_resume_loader_of_its_caller(tmp_path, monkeypatch):
    """What ``python basicsr/train.py`` needs: the caller's own load_resume_state is replaced."""

    def load_resume_state(opt):  # stands for BasicSR's: it references torch.cuda.current_device
        return torch.cuda.current_device()

    caller = {'load_resume_state': load_resume_state, 'parse_options': options.parse_options}
    opt_file = tmp_path / 'o.yml'
    opt_file.write_text('name: x\nnum_gpu: 0\ndatasets: {}\npath: {}\nlogger: {}\n')
    monkeypatch.setattr('sys.argv', ['train.py', '-opt', str(opt_file)])
    exec('parse_options(".", is_train=True)', caller)
    assert caller['load_resume_state'] is compat.load_resume_state


def test_resume_state_with_counter_loads_on_cpu(tmp_path):
    """BasicSR's MultiStepRestartLR state holds a Counter, which torch's weights_only loading rejects by default."""
    from basicsr.models.lr_scheduler import MultiStepRestartLR
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(net.parameters())
    scheduler = MultiStepRestartLR(optimizer, milestones=[10])
    state_dir = tmp_path / 'training_states'
    state_dir.mkdir()
    torch.save({'epoch': 1, 'iter': 7, 'optimizers': [optimizer.state_dict()], 'schedulers': [scheduler.state_dict()]},
               state_dir / '7.state')
    opt = {'auto_resume': True, 'path': {'training_states': str(state_dir), 'models': str(tmp_path)}, 'network_g': {}}
    state = compat.load_resume_state(opt)
    assert state['iter'] == 7 and opt['path']['resume_state'].endswith('7.state')
    assert state['schedulers'][0]['milestones'] == {10: 1}


def test_stray_files_in_training_states_do_not_break_auto_resume(tmp_path, capsys):
    """BasicSR's auto-resume does float('10 copy') on a stray copy; only <iteration>.state files count."""
    state_dir = tmp_path / 'training_states'
    state_dir.mkdir()
    torch.save({'epoch': 0, 'iter': 4, 'optimizers': [], 'schedulers': []}, state_dir / '4.state')
    (state_dir / '10 copy.state').write_bytes(b'whatever')
    (state_dir / 'notes.txt').write_text('ignored silently')
    (state_dir / '.saving-1@host@x').mkdir()
    opt = {'auto_resume': True, 'path': {'training_states': str(state_dir), 'models': str(tmp_path)}, 'network_g': {}}
    assert compat.load_resume_state(opt)['iter'] == 4 and opt['path']['resume_state'].endswith('4.state')
    assert f'ignoring {state_dir / "10 copy.state"} (not <iteration>.state)' in capsys.readouterr().err


class Payload:
    """Unpickling calls os.mkdir(marker): what a malicious checkpoint would do with something worse."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker, )


def test_pretrained_networks_and_states_are_loaded_with_weights_only(tmp_path, monkeypatch):
    """With TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (or on torch < 2.6), BasicSR's own load_network runs a pickle payload;
    the plugin's refuses it in one line naming the file, and still loads a plain checkpoint."""

    class Model(BaseModel):
        pass

    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    model = Model({'num_gpu': 0, 'is_train': False, 'dist': False})
    net = torch.nn.Linear(2, 2)
    evil, marker = tmp_path / 'evil.pth', tmp_path / 'payload ran'
    torch.save({'params': Payload(marker)}, evil)
    with pytest.raises(Exception):
        compat.load_network.mrsr_replaces(model, net, str(evil))  # BasicSR's own: runs the payload
    assert marker.exists()
    marker.rmdir()

    assert BaseModel.load_network is compat.load_network
    with pytest.raises(MRSRUserError) as err:
        model.load_network(net, str(evil))
    message = str(err.value)
    assert message.startswith(f'{evil}: refused by weights_only loading') and 'posix.mkdir' in message
    assert '\n' not in message and not marker.exists()

    good = tmp_path / 'good.pth'
    torch.save({'params': {f'module.{k}': v + 1 for k, v in net.state_dict().items()}}, good)
    model.load_network(net, str(good), param_key='params_ema')  # falls back to params, drops module.
    assert torch.equal(net.weight, torch.load(good, weights_only=True)['params']['module.weight'])
    with pytest.raises(MRSRUserError, match='no weights under params'):
        torch.save({'other': {}}, tmp_path / 'other.pth')
        model.load_network(net, str(tmp_path / 'other.pth'))

    state_dir = tmp_path / 'training_states'
    state_dir.mkdir()
    torch.save({'iter': 3, 'schedulers': [Payload(marker)]}, state_dir / '3.state')
    opt = {'auto_resume': True, 'path': {'training_states': str(state_dir)}}
    with pytest.raises(MRSRUserError, match=r'3\.state: refused by weights_only loading'):
        compat.load_resume_state(opt)
    assert not marker.exists()


def test_missing_resume_state_names_the_file(tmp_path):
    with pytest.raises(MRSRUserError, match='nope.state'):
        compat.load_resume_state({'auto_resume': False, 'path': {'resume_state': str(tmp_path / 'nope.state')}})


def test_ddp_on_cpu_wraps_without_device_ids():

    class Model(BaseModel):
        pass

    model = Model({'num_gpu': 0, 'is_train': True, 'dist': True})
    seen = {}

    class FakeDDP(torch.nn.Module):

        def __init__(self, module, **kwargs):
            super().__init__()
            seen.update(kwargs)

    import torch.nn.parallel as parallel
    original = parallel.DistributedDataParallel
    parallel.DistributedDataParallel = FakeDDP
    try:
        model.model_to_device(torch.nn.Linear(1, 1))
    finally:
        parallel.DistributedDataParallel = original
    assert 'device_ids' not in seen


def test_missing_vgg_weights_offline_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))

    def offline(*args, **kwargs):
        raise urllib.error.URLError('[Errno -2] Name or service not known')

    monkeypatch.setattr('torchvision.models._api.load_state_dict_from_url', offline)
    from basicsr.losses.basic_loss import PerceptualLoss
    with pytest.raises(WeightsMissingError) as err:
        PerceptualLoss({'conv5_4': 1.0}, vgg_type='vgg19')
    message = str(err.value)
    assert os.path.join(str(tmp_path), 'experiments', 'pretrained_models', 'vgg19-dcbb9e9d.pth') in message
    assert os.path.join(str(tmp_path), 'torch_home', 'hub', 'checkpoints', 'vgg19-dcbb9e9d.pth') in message


def _offline(monkeypatch, tmp_path):
    """No download can happen, and a file at BasicSR's VGG19 path that BasicSR would load into any vgg_type."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))

    def download(*args, **kwargs):
        raise AssertionError('a download was attempted')

    monkeypatch.setattr('torchvision.models._api.load_state_dict_from_url', download)
    os.makedirs(os.path.dirname(vgg_arch.VGG_PRETRAIN_PATH))
    with open(vgg_arch.VGG_PRETRAIN_PATH, 'wb') as f:
        f.write(b'not a VGG16 state dict')


def test_perceptual_loss_vgg16_takes_the_converted_weights_and_grey_input(vgg_weights, tmp_path, monkeypatch):
    """BasicSR's PerceptualLoss with vgg_type vgg16 (the SRGAN recipe's deepest features before ReLU, conv5_3) from
    mrsr-fetch-vgg's file, nothing downloaded; a grey (N, 1, H, W) batch scores as its repetition to RGB."""
    from basicsr.losses.basic_loss import PerceptualLoss

    from mrsr_plugin.pretrained_vgg import load_state
    _offline(monkeypatch, tmp_path)
    monkeypatch.setenv('MRSR_WEIGHTS', vgg_weights)
    loss = PerceptualLoss({'conv5_3': 1.0}, vgg_type='vgg16')
    assert 'vgg16_weights' in compat.APPLIED
    assert (vgg_arch.vgg.__name__, vgg_arch.VGG_PRETRAIN_PATH) == ('torchvision.models.vgg',
                                                                   'experiments/pretrained_models/vgg19-dcbb9e9d.pth')
    vgg = loss.vgg.vgg_net
    assert list(vgg._modules)[-1] == 'conv5_3' and len(vgg) == 29  # features[:29]: up to conv5_3, before its ReLU
    assert torch.equal(vgg.conv5_3.weight, load_state('vgg16_imagenet_features')['28.weight'])
    assert not any(p.requires_grad for p in loss.parameters())

    torch.manual_seed(0)
    gt = torch.rand(2, 1, 48, 48)
    sr = (gt + 0.1 * torch.randn_like(gt)).clamp(0, 1).requires_grad_()
    grey, _ = loss(sr, gt)
    assert 'vgg_grey_input' in compat.APPLIED
    rgb, _ = loss(sr.repeat(1, 3, 1, 1), gt.repeat(1, 3, 1, 1))
    assert grey.item() > 0 and torch.allclose(grey, rgb, rtol=1e-6, atol=0)
    assert loss(gt, gt)[0].item() == 0
    grey.backward()
    assert sr.grad.abs().sum() > 0


def test_vgg_grey_input_is_needed():
    """BasicSR's forward fails on one channel; the fixed one runs (here on a 3-channel convolution alone)."""
    extractor = vgg_arch.VGGFeatureExtractor.__new__(vgg_arch.VGGFeatureExtractor)
    torch.nn.Module.__init__(extractor)
    extractor.vgg_net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    extractor.layer_name_list, extractor.use_input_norm, extractor.range_norm = ['0'], False, False
    with pytest.raises(RuntimeError, match='channels'):
        vgg_arch.VGGFeatureExtractor.forward.__wrapped__(extractor, torch.rand(1, 1, 8, 8))
    assert extractor(torch.rand(1, 1, 8, 8))['0'].shape == (1, 4, 6, 6)


def test_perceptual_loss_vgg16_without_weights_is_one_line(tmp_path, monkeypatch):
    from basicsr.losses.basic_loss import PerceptualLoss
    _offline(monkeypatch, tmp_path)
    monkeypatch.setenv('MRSR_WEIGHTS', str(tmp_path / 'cache'))
    with pytest.raises(WeightsMissingError) as err:
        PerceptualLoss({'conv5_3': 1.0}, vgg_type='vgg16')
    message = str(err.value)
    assert '\n' not in message and 'run mrsr-fetch-vgg' in message
    assert str(tmp_path / 'cache' / 'vgg16_imagenet_features-57067929.pth') in message
    assert vgg_arch.vgg.__name__ == 'torchvision.models.vgg'


def test_failed_checkpoint_save_leaves_no_file_that_looks_complete(tmp_path, monkeypatch):
    """BasicSR's retry loop swallows save errors; a truncated .pth must not appear under models/."""
    import basicsr.models.base_model as base_model

    class Model(BaseModel):
        pass

    models = tmp_path / 'models'
    models.mkdir()
    model = Model({'num_gpu': 0, 'is_train': True, 'dist': False, 'path': {'models': str(models)}})
    net = torch.nn.Linear(4, 4)
    model.save_network(net, 'net_g', 1)
    assert sorted(os.listdir(models)) == ['net_g_1.pth']
    assert torch.load(models / 'net_g_1.pth', weights_only=True)['params'].keys() == net.state_dict().keys()

    def interrupted(obj, path):
        with open(path, 'wb') as f:
            f.write(b'PK\x03\x04 half a checkpoint')
        raise OSError('disk full')

    monkeypatch.setattr(base_model.torch, 'save', interrupted)
    monkeypatch.setattr(base_model.time, 'sleep', lambda seconds: None)
    model.save_network(net, 'net_g', 2)
    assert sorted(os.listdir(models)) == ['net_g_1.pth']


def test_staging_folders_of_killed_saves_are_removed_by_the_next_save(tmp_path):
    """A kill during a save leaves .saving-<pid>@<host>@*; the next save removes those whose process is gone (and
    those of older versions, without an owner, once a day old), never a live one."""

    class Model(BaseModel):
        pass

    models = tmp_path / 'models'
    models.mkdir()
    dead = subprocess.Popen(['true'])
    dead.wait()
    host = socket.gethostname()
    leftovers = {f'.saving-{dead.pid}@{host}@abc': False, f'.saving-{os.getpid()}@{host}@live': True,
                 f'.saving-{dead.pid}@another-host@x': True, '.saving-old': False, '.saving-recent': True}
    for name in leftovers:
        (models / name).mkdir()
        (models / name / 'net_g_1.pth').write_bytes(b'half')
    day_old = time.time() - 2 * 24 * 3600
    os.utime(models / '.saving-old', (day_old, day_old))
    model = Model({'num_gpu': 0, 'is_train': True, 'dist': False, 'path': {'models': str(models)}})
    model.save_network(torch.nn.Linear(1, 1), 'net_g', 5)
    assert sorted(os.listdir(models)) == sorted(['net_g_5.pth'] + [n for n, kept in leftovers.items() if kept])
