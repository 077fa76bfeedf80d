"""scripts/benchmark_zoo.py end to end on the embedded real MR sample, with tiny models and budgets."""
import csv
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_python

from mrsr_plugin.apps import benchmark
from mrsr_plugin.options import load_options

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / 'scripts' / 'benchmark_zoo.py')
SMALL = ['--force_yml', 'datasets:train:batch_size_per_gpu=2', 'datasets:train:num_worker_per_gpu=0',
         'datasets:train:gt_size=32', 'train:perceptual_opt=~']


@pytest.fixture(scope='module')
def real_mr(prostate3t_prepared):
    """The embedded prostate patients; the tests use the validation patient (19 slices)."""
    return prostate3t_prepared


@pytest.fixture(scope='module')
def tiny_zoo(tmp_path_factory):
    """The zoo's own x2 option files for SRCNN and MRDAB with a tiny MRDAB, plus Bicubic."""
    folder = tmp_path_factory.mktemp('options')
    paths = []
    for name in ('train_srcnn_x2', 'train_mrdab_x2'):
        opt = load_options(str(REPO / 'options' / 'zoo' / f'{name}.yml'))
        if opt['network_g']['type'] == 'MRDABNet':
            opt['network_g'].update(num_feat=8, num_block=1, num_groups=1, growth=4)
            opt['network_d'].update(num_feat=8, norms=['none', 'in', 'bn'], head_feat=16)
        paths.append(folder / f'{name}.yml')
        paths[-1].write_text(yaml.safe_dump(opt, sort_keys=False))
    return [str(p) for p in paths] + [str(REPO / 'options' / 'zoo' / 'test_bicubic_x2.yml')]


def test_trains_tests_and_writes_every_artefact(real_mr, tiny_zoo, tmp_path):
    out = tmp_path / 'bench'
    proc = run_python([SCRIPT, '--data', str(real_mr), '--split', 'val', '--iters', '2', '--options', *tiny_zoo,
                       '--output', str(out), '--metrics', 'mr_psnr', 'mr_ssim', 'hfen', *SMALL], cwd=tmp_path,
                      timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    for artefact in ('table3.md', 'table3.csv', 'table4.md', 'table4.csv', 'results.json', 'quality_vs_time.png',
                     'fig7_x2.png', 'slices.csv', 'patients.csv', 'intervals.csv'):
        assert (out / artefact).stat().st_size > 0, artefact
    with open(out / 'table3.csv') as f:
        table3 = list(csv.DictReader(f))
    assert [row['Model'] for row in table3] == ['SRCNN', 'MRDAB (ours)', 'Bicubic']
    assert all(0 < float(row['MR SSIM x2']) <= 1 and float(row['MR PSNR x2']) > 0 for row in table3)
    # intervals around the mean over patients, the paired difference to Bicubic (none for Bicubic itself)
    assert all(float(row['HFEN x2 low']) <= float(row['HFEN x2']) <= float(row['HFEN x2 high']) for row in table3)
    assert table3[2]['MR PSNR x2 diff'] == '' and float(table3[0]['MR PSNR x2 diff low']) <= float(
        table3[0]['MR PSNR x2 diff'])
    markdown = (out / 'table3.md').read_text()
    assert 'one patient only' in markdown and '| Bicubic | ' in markdown and 'difference to Bicubic' in markdown
    results = json.loads((out / 'results.json').read_text())['results']
    srcnn = results[0]
    assert srcnn['params'] == 69251 and srcnn['macs_per_slice'] > 0 and srcnn['slices'] == 19
    assert results[2]['params'] == 0 and results[2]['test_time_s'] > 0
    with open(out / 'table4.csv') as f:
        assert len(list(csv.DictReader(f))) == 3

    again = run_python([SCRIPT, '--data', str(real_mr), '--split', 'val', '--options', tiny_zoo[2], '--output',
                        str(out)], cwd=tmp_path)
    assert again.returncode == 2 and 'never overwritten' in again.stdout


def test_missing_checkpoint_is_named(real_mr, tiny_zoo, tmp_path):
    proc = run_python([SCRIPT, '--data', str(real_mr), '--split', 'val', '--options', tiny_zoo[0], '--checkpoints',
                       str(tmp_path / 'none'), '--output', str(tmp_path / 'b')], cwd=tmp_path)
    assert proc.returncode == 2
    assert os.path.join(str(tmp_path / 'none'), 'SRCNN_955_x2', 'models', 'net_g_latest.pth') in proc.stdout
    assert not (tmp_path / 'b').exists()


def test_checkpoint_that_does_not_match_its_option_file(real_mr, tiny_zoo, tmp_path):
    with open(tiny_zoo[0]) as f:
        name = yaml.safe_load(f)['name']
    models = tmp_path / 'ckpt' / name / 'models'
    models.mkdir(parents=True)
    torch.save({'params': {'conv.weight': torch.zeros(1)}}, models / 'net_g_latest.pth')
    proc = run_python([SCRIPT, '--data', str(real_mr), '--split', 'val', '--options', tiny_zoo[0], '--checkpoints',
                       str(tmp_path / 'ckpt'), '--output', str(tmp_path / 'b')], cwd=tmp_path)
    assert proc.returncode == 2 and 'does not fit network_g' in proc.stdout, proc.stdout[-2000:]


def test_a_finished_training_is_recognised_past_a_thousand_iterations(tmp_path):
    """BasicSR logs 'iter:   3,200,': the check that a training reached its end (and --resume's) reads that."""
    assert benchmark.finished('[EDSR_..][epoch:  0, iter:   3,200, lr:(2.500e-04,)]', 3200)
    assert benchmark.finished('[x][epoch:  0, iter:     400, lr:(2.500e-04,)]', 400)
    assert not benchmark.finished('[x][epoch:  0, iter:   3,100, lr:(2.500e-04,)]', 3200)
    opt = {'name': 'M', 'train': {'total_iter': 1200}}
    assert benchmark.trained_before(opt, str(tmp_path)) is None
    (tmp_path / 'M.train.log').write_text('[M][epoch:  0, iter:   1,200, lr:(1e-4,)]\n')
    assert benchmark.trained_before(opt, str(tmp_path)) is None  # no checkpoint
    checkpoint = tmp_path / 'experiments' / 'M' / 'models' / 'net_g_latest.pth'
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b'')
    assert benchmark.trained_before(opt, str(tmp_path)) == str(checkpoint)
    assert benchmark.trained_before({**opt, 'train': {'total_iter': 2400}}, str(tmp_path)) is None


def test_old_set_flag_points_to_force_yml(capsys):
    from mrsr_plugin.cli.benchmark_zoo import parse_args
    with pytest.raises(SystemExit) as done:
        parse_args(['--set', 'datasets.train.gt_size=64'])
    assert done.value.code == 2 and '--set is now --force_yml, with colons' in capsys.readouterr().err
