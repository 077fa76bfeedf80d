"""End-to-end runs of BasicSR's own train/test pipelines with the plugin, each in a fresh interpreter, on CPU."""
import json
import os
import re
import shutil
from pathlib import Path

import basicsr
import pytest
import yaml
from conftest import run_python, tiny_options, write_options

import mrsr_plugin.train
from mrsr_plugin.apps.tinyrun import free_port


def _assert_ok(proc):
    assert proc.returncode == 0, proc.stdout[-4000:]


def _psnr_values(log):
    return [float(v) for v in re.findall(r'# psnr: ([0-9.]+)', log)]


def test_gan_run_saves_validates_and_resumes_on_cpu(tiny_dataset, tmp_path):
    opt_file = write_options(tmp_path / 'gan.yml', tiny_options(tiny_dataset, 'tiny_gan', total_iter=4))
    env = {'MRSR_ROOT': str(tmp_path)}
    first = run_python([mrsr_plugin.train.__file__, '-opt', opt_file], cwd=tmp_path, env=env)
    _assert_ok(first)
    exp = tmp_path / 'experiments' / 'tiny_gan'
    assert {'net_g_2.pth', 'net_g_4.pth', 'net_d_4.pth', 'net_g_latest.pth'} <= set(os.listdir(exp / 'models'))
    assert {'2.state', '4.state'} <= set(os.listdir(exp / 'training_states'))
    assert len(_psnr_values(first.stdout)) >= 2  # validated at iter 2 and 4 (and at the end)

    resumed = run_python([mrsr_plugin.train.__file__, '-opt', opt_file, '--auto_resume', '--force_yml',
                          'train:total_iter=6'], cwd=tmp_path, env=env)
    _assert_ok(resumed)
    assert 'Resuming training from epoch' in resumed.stdout and 'iter: 4.' in resumed.stdout
    assert 'net_g_6.pth' in os.listdir(exp / 'models')


def test_test_entry_evaluates_a_checkpoint(tiny_dataset, tmp_path):
    train_opt = tiny_options(tiny_dataset, 'tiny_psnr', total_iter=2, model_type='SRModel')
    env = {'MRSR_ROOT': str(tmp_path)}
    _assert_ok(run_python([mrsr_plugin.train.__file__, '-opt', write_options(tmp_path / 'train.yml', train_opt)],
                          cwd=tmp_path, env=env))
    checkpoint = tmp_path / 'experiments' / 'tiny_psnr' / 'models' / 'net_g_latest.pth'
    test_opt = {
        'name': 'tiny_psnr_test', 'model_type': 'SRModel', 'scale': train_opt['scale'], 'num_gpu': 0,
        'datasets': {'test_1': dict(train_opt['datasets']['val'], name='tiny_test')},
        'network_g': train_opt['network_g'],
        'path': {'pretrain_network_g': str(checkpoint), 'strict_load_g': True},
        'val': dict(train_opt['val'], save_img=True, suffix=None),  # BasicSR's test mode reads val.suffix
    }
    proc = run_python([str(Path(mrsr_plugin.train.__file__).with_name('test.py')), '-opt',
                       write_options(tmp_path / 'test.yml', test_opt)], cwd=tmp_path, env=env)
    _assert_ok(proc)
    assert len(_psnr_values(proc.stdout)) == 1
    assert len(os.listdir(tmp_path / 'results' / 'tiny_psnr_test' / 'visualization' / 'tiny_test')) == 2


def test_missing_option_file_is_one_clear_line(tmp_path):
    proc = run_python([mrsr_plugin.train.__file__, '-opt', 'nowhere.yml'], cwd=tmp_path,
                      env={'MRSR_ROOT': str(tmp_path)})
    assert proc.returncode == 2
    assert 'nowhere.yml' in proc.stdout and 'Traceback' not in proc.stdout


@pytest.fixture
def basicsr_checkout(tmp_path):
    """A folder laid out like a clone of XPixelGroup/BasicSR: BasicSR/basicsr/{train,test}.py and the package."""
    checkout = tmp_path / 'BasicSR'
    shutil.copytree(os.path.dirname(basicsr.__file__), checkout / 'basicsr',
                    ignore=shutil.ignore_patterns('__pycache__'))
    return checkout


def test_basicsr_own_train_py_from_a_checkout_trains_and_resumes(tiny_dataset, tmp_path, basicsr_checkout):
    """``PYTHONPATH=. python basicsr/train.py -opt ...`` as BasicSR documents it, without importing the plugin."""
    opt_file = write_options(tmp_path / 'gan.yml', tiny_options(tiny_dataset, 'tiny_checkout', total_iter=2))
    env = {'PYTHONPATH': str(basicsr_checkout)}
    first = run_python(['basicsr/train.py', '-opt', opt_file], cwd=basicsr_checkout, env=env)
    _assert_ok(first)
    assert str(basicsr_checkout / 'basicsr' / '__init__.py') in run_python(
        ['-c', 'import basicsr; print(basicsr.__file__)'], cwd=basicsr_checkout, env=env).stdout
    models = basicsr_checkout / 'experiments' / 'tiny_checkout' / 'models'
    assert 'net_g_2.pth' in os.listdir(models)

    resumed = run_python(['basicsr/train.py', '-opt', opt_file, '--auto_resume', '--force_yml',
                          'train:total_iter=4'], cwd=basicsr_checkout, env=env)
    _assert_ok(resumed)
    assert 'net_g_4.pth' in os.listdir(models)


def test_basicsr_own_test_py_from_a_checkout(tiny_dataset, tmp_path, basicsr_checkout):
    """``python basicsr/test.py -opt ...`` evaluates a plugin model with the plugin's MR metrics."""
    train_opt = tiny_options(tiny_dataset, 'tiny_for_test', total_iter=1, model_type='SRModel')
    env = {'PYTHONPATH': str(basicsr_checkout)}
    _assert_ok(run_python(['basicsr/train.py', '-opt', write_options(tmp_path / 'train.yml', train_opt)],
                          cwd=basicsr_checkout, env=env))
    test_opt = {
        'name': 'tiny_checkout_test', 'model_type': 'MRSRModel', 'scale': train_opt['scale'], 'num_gpu': 0,
        'datasets': {'test_1': dict(train_opt['datasets']['val'], name='tiny_test')},
        'network_g': train_opt['network_g'],
        'path': {'pretrain_network_g': str(basicsr_checkout / 'experiments' / 'tiny_for_test' / 'models' /
                                           'net_g_latest.pth')},
        'val': {'save_img': False, 'metrics': {'mr_psnr': {'type': 'calculate_mr_psnr', 'crop_border': 2}}},
    }
    proc = run_python(['basicsr/test.py', '-opt', write_options(tmp_path / 'test.yml', test_opt)],
                      cwd=basicsr_checkout, env=env)
    _assert_ok(proc)
    assert re.search(r'# mr_psnr: [0-9.]+', proc.stdout)


@pytest.mark.parametrize('model_type', ['SRGANModel', 'MRSRGANModel'])  # BasicSR's, and the plugin's fast paths
def test_torchrun_two_processes_gloo_on_cpu(tiny_dataset, tmp_path, model_type):
    opt = tiny_options(tiny_dataset, 'tiny_ddp', total_iter=4)
    opt['model_type'] = model_type
    proc = run_python([
        '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_addr=127.0.0.1',
        f'--master_port={free_port()}', mrsr_plugin.train.__file__, '-opt',
        write_options(tmp_path / 'ddp.yml', opt), '--launcher', 'pytorch'
    ], cwd=tmp_path, env={'MRSR_ROOT': str(tmp_path), 'OMP_NUM_THREADS': '1'})
    _assert_ok(proc)
    assert re.search(r'World size \(gpu number\): 2', proc.stdout)
    assert 'net_g_4.pth' in os.listdir(tmp_path / 'experiments' / 'tiny_ddp' / 'models')
    assert len(_psnr_values(proc.stdout)) >= 2


def test_the_demo_on_the_embedded_prostate_patients(prostate3t_prepared, tmp_path):
    """``make demo`` in miniature: the demo's own option file (2 iterations, smaller crops) on the prepared
    Prostate-3T LMDBs through the plugin's train entry, then scripts/evaluate.py on the held-out patient."""
    repo = Path(mrsr_plugin.train.__file__).parents[1]
    with open(repo / 'options' / 'demo_mrdab_x2.yml') as f:
        opt = yaml.safe_load(f)
    for phase, dataset in opt['datasets'].items():
        split = 'train' if phase == 'train' else 'val'
        dataset.update(dataroot_gt=str(prostate3t_prepared / split / 'HR.lmdb'),
                       dataroot_lq=str(prostate3t_prepared / split / 'LR_x2.lmdb'))
    opt['datasets']['train'].update(gt_size=32, batch_size_per_gpu=2, num_worker_per_gpu=0)
    del opt['datasets']['val'], opt['val']  # the evaluation below tests instead
    opt['train']['total_iter'] = 2
    options = write_options(tmp_path / 'demo.yml', opt)
    proc = run_python([mrsr_plugin.train.__file__, '-opt', options], cwd=tmp_path, env={'MRSR_ROOT': str(tmp_path)})
    _assert_ok(proc)
    run = tmp_path / 'experiments' / opt['name']
    proc = run_python([str(repo / 'scripts' / 'evaluate.py'), '-opt', options, '-w',
                       str(run / 'models' / 'net_g_latest.pth'), '--data', str(prostate3t_prepared), '--panel',
                       str(run / 'fig7.png'), '--json', str(run / 'test.json')], cwd=tmp_path,
                      env={'MRSR_WEIGHTS': str(tmp_path)})  # no LPIPS / DISTS from the user's cache: +50 s on 2 cores
    _assert_ok(proc)
    assert '| case0004 | 19 |' in proc.stdout and '| mean | 19 |' in proc.stdout
    assert (run / 'fig7.png').stat().st_size > 10000
    with open(run / 'test.json') as f:
        summary = json.load(f)['summary']
    assert set(summary) == {'bicubic', 'model'} and set(summary['model']) == {'case0004', 'mean'}


def test_speed_block_of_the_option_file_reaches_the_models(tiny_dataset, tmp_path):
    """AMP, merge re-parameterisation and channels_last from YAML through the plugin's train and test entries."""
    opt = tiny_options(tiny_dataset, 'tiny_fast', total_iter=2)
    opt.update(model_type='MRSRGANModel',
               speed={'channels_last': True, 'amp': 'bf16', 'compile': False, 'reparameterize': 'merge'})
    env = {'MRSR_ROOT': str(tmp_path)}
    proc = run_python([mrsr_plugin.train.__file__, '-opt', write_options(tmp_path / 'fast.yml', opt)], cwd=tmp_path,
                      env=env)
    _assert_ok(proc)
    assert len(_psnr_values(proc.stdout)) >= 1
    assert "('amp', 'bf16')" in proc.stdout or 'amp: bf16' in proc.stdout  # BasicSR logs the options it read

    opt['speed']['amp'] = 'fp8'
    bad = write_options(tmp_path / 'bad.yml', opt)
    proc = run_python([mrsr_plugin.train.__file__, '-opt', bad], cwd=tmp_path, env=env)
    assert proc.returncode == 2 and 'Traceback' not in proc.stdout
    assert f'{bad}: speed.amp must be ~ (off), bf16 or fp16, got \'fp8\'' in proc.stdout


def test_gan_run_with_the_vgg16_perceptual_loss_on_grey_mr(tiny_dataset, tmp_path, vgg_weights):
    """Two iterations of MRDAB-GAN (L1 + perceptual + GAN) on single-channel slices (BasicSR's Y channel of the PNGs)
    with BasicSR's PerceptualLoss on VGG16 conv5_3: the converted weights, nothing downloaded (offline TORCH_HOME)."""
    opt = tiny_options(tiny_dataset, 'tiny_percep', total_iter=2, model_type='MRSRGANModel')
    for dataset in opt['datasets'].values():
        dataset['color'] = 'y'
    opt['network_g'].update(num_in_ch=1, num_out_ch=1)
    opt['network_d']['num_in_ch'] = 1
    opt['train']['perceptual_opt'] = {'type': 'PerceptualLoss', 'layer_weights': {'conv5_3': 1.0}, 'vgg_type': 'vgg16',
                                      'use_input_norm': True, 'range_norm': False, 'perceptual_weight': 0.1,
                                      'style_weight': 0, 'criterion': 'l1'}
    env = {'MRSR_ROOT': str(tmp_path), 'MRSR_WEIGHTS': vgg_weights, 'TORCH_HOME': str(tmp_path / 'torch_home')}
    proc = run_python([mrsr_plugin.train.__file__, '-opt', write_options(tmp_path / 'percep.yml', opt)], cwd=tmp_path,
                      env=env)
    _assert_ok(proc)
    percep = [float(v) for v in re.findall(r'l_g_percep: ([0-9.e+-]+)', proc.stdout)]
    assert len(percep) == 2 and all(v > 0 for v in percep)
    assert 'net_g_latest.pth' in os.listdir(tmp_path / 'experiments' / 'tiny_percep' / 'models')
    assert not (tmp_path / 'torch_home').exists()  # torch hub was never asked

