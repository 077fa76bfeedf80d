"""scripts/benchmark_speed.py end to end on the CPU with the smallest settings and a tiny MRDAB-GAN."""
import json
from pathlib import Path

import pytest
from conftest import run_python

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / 'scripts' / 'benchmark_speed.py')


def test_limit_forwards_and_training_iteration(tmp_path):
    out = tmp_path / 'speed.json'
    proc = run_python([
        SCRIPT, '--device', 'cpu', '--models', 'srcnn', 'fsrcnn', '--scales', '4', '--batch', '1', '--repeats', '1',
        '--warmup', '0', '--matmul-n', '256', '--train-iters', '1', '--train-warmup', '0', '--train-batch', '1',
        '--train-workers', '0', '--tiny-train', '--json', str(out)
    ], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    result = json.loads(out.read_text())
    assert result['env']['device'] == 'cpu' and result['env']['threads'] >= 1 and result['env']['torch']
    matmul = result['matmul']
    assert matmul['n'] == 256 and matmul['tflops']['best'] > 0
    libraries = (matmul['blas'], matmul['convolution_gemm'])
    assert matmul['tflops']['median'] == max(lib['tflops']['median'] for lib in libraries) > 0
    env = result['env']  # the plugin's defaults
    assert env['channels_last'] and env['reparameterize'] == 'fold' and env['keep_freed_memory']
    assert result['conv3x3']['tflops']['median'] > 0
    rows = result['inference']
    assert [(r['model'], r['scale'], r['batch']) for r in rows] == [('SRCNN', 4, 1), ('FSRCNN', 4, 1)]
    for row in rows:
        assert row['lr_size'] == 96 and row['params'] > 0 and row['macs_per_slice'] > 0
        assert 0 < row['latency_s']['min'] <= row['latency_s']['median']
        assert row['achieved_tflops'] > 0 and row['matmul_share'] > 0 and row['conv_share'] > 0
        assert row['peak_memory_bytes'] > 0
    training = result['training']
    assert training['tiny'] and training['losses'] == ['gan_opt', 'pixel_opt'] and training['iters'] == 1
    assert training['speed'] == {'channels_last': True, 'amp': None, 'compile': False, 'reparameterize': 'fold',
                                 'keep_freed_memory': True}
    assert training['step_s']['median'] > 0 and training['data_s']['median'] > 0
    assert 0 < training['data_share']['median'] < 1
    assert 'SRCNN' in proc.stdout and 'perceptual_opt removed' in proc.stdout


def _mrdab_fsrcnn(tmp_path, *flags):
    out = tmp_path / 'speed.json'
    proc = run_python([
        SCRIPT, '--device', 'cpu', '--models', 'mrdab', 'fsrcnn', '--scales', '4', '--batch', '1', '2', '--repeats',
        '1', '--warmup', '0', '--matmul-n', '256', '--hr-size', '32', '--max-forward-s', '1e-9', '--no-train',
        '--json', str(out), *flags
    ], cwd=tmp_path, timeout=120)
    return proc, out


@pytest.fixture(scope='module')
def plain_run(tmp_path_factory):
    """MRDAB and FSRCNN with the default fast paths, run once for the tests below."""
    return _mrdab_fsrcnn(tmp_path_factory.mktemp('plain'))


def test_mrdab_ratios_and_batch_cut_without_training(plain_run):
    proc, out = plain_run
    assert proc.returncode == 0, proc.stdout[-3000:]
    result = json.loads(out.read_text())
    assert result['training'] is None
    rows = result['inference']
    assert [(r['model'], r['requested_batch'], r['batch']) for r in rows] == [('MRDAB', 1, 1), ('MRDAB', 2, 1),
                                                                               ('FSRCNN', 1, 1), ('FSRCNN', 2, 1)]
    assert rows[1]['note'].startswith('batch 2 cut to 1') and rows[1]['latency_s'] == rows[0]['latency_s']
    mrdab, fsrcnn = rows[0], rows[2]
    assert 'mrdab_time_ratio' not in mrdab
    assert fsrcnn['mrdab_mac_ratio'] == mrdab['macs_per_slice'] / fsrcnn['macs_per_slice'] > 1
    assert fsrcnn['mrdab_time_ratio'] > 0


def test_macs_are_the_plain_networks_whatever_the_fast_path(plain_run, tmp_path):
    macs = []
    for proc, out in (plain_run, _mrdab_fsrcnn(tmp_path, '--no-channels-last', '--reparameterize', 'merge', '--amp',
                                                'bf16', '--no-keep-freed-memory')):
        assert proc.returncode == 0, proc.stdout[-3000:]
        macs.append([row['macs_per_slice'] for row in json.loads(out.read_text())['inference']])
    assert macs[0] == macs[1]


def test_fp16_weights_on_cpu_are_refused(tmp_path):
    proc = run_python([SCRIPT, '--device', 'cpu', '--dtype', 'fp16', '--no-train'], cwd=tmp_path)
    assert proc.returncode == 2 and '--dtype fp16 runs on CUDA only' in proc.stdout
