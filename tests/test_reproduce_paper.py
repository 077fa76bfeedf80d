"""scripts/reproduce_paper.py end to end on the embedded prostate MR with a one-iteration budget, its presets, the
perceptual variant and learning curves."""
import argparse
import csv
import json
import os
import shutil

import pytest
import yaml
from conftest import REPO, run_python

from mrsr_plugin.apps import reproduce as reproduce_paper
from mrsr_plugin.errors import BenchmarkError
from mrsr_plugin.options import load_options

SCRIPT = str(REPO + '/scripts/reproduce_paper.py')


def test_cpu_preset_derives_budgeted_files_and_leaves_the_originals(tmp_path):
    table3 = {p.rsplit('/', 1)[1]: yaml.safe_load(open(p)) for p in
              reproduce_paper.derived_files('table3', reproduce_paper.PRESETS['cpu'], str(tmp_path / 't3'))}
    ablation = {p.rsplit('/', 1)[1]: yaml.safe_load(open(p)) for p in
                reproduce_paper.derived_files('ablation', reproduce_paper.PRESETS['cpu'], str(tmp_path / 'ab'))}
    assert len(table3) == 14 and len(ablation) == 10  # 6 models + MRDAB with the skip, x2 and x4; Bicubic, 9 rows
    networks = [json.dumps(opt['network_g'], sort_keys=True) for opt in ablation.values()]
    assert len(set(networks)) == len(networks)  # no row trained twice (table2_none is table1_k357_dense)
    assert ablation['MRDAB_GAN_x4_table2_dpam.yml']['network_g']['attention'] == 'dpam'
    trained = [opt for opt in list(table3.values()) + list(ablation.values()) if 'train' in opt['datasets']]
    assert all(opt['train']['total_iter'] and opt['datasets']['train']['batch_size_per_gpu'] == 4 and
               opt['datasets']['train']['gt_size'] == 128 and opt['train']['perceptual_opt'] is None and
               opt['train']['optim_g']['lr'] == 5e-4 for opt in trained)
    skip = table3['MRDAB_GAN_x2_bicubic_skip.yml']
    assert skip['label'] == 'MRDAB (ours) + bicubic skip' and skip['network_g']['global_skip'] == 'bicubic'
    assert table3['MRDAB_GAN_x2.yml']['network_g']['global_skip'] == 'none'
    assert skip['network_g']['num_feat'] == 32 and skip['network_d']['num_feat'] == 32
    matched = ablation['MRDAB_GAN_x4_table1_k3_residual_matched.yml']['network_g']
    assert matched['growth'] == 36 and ablation['MRDAB_GAN_x4_table1_k3_residual.yml']['network_g']['growth'] == 16
    assert load_options(REPO + '/options/zoo/train_mrdab_x2.yml')['network_g']['num_feat'] == 64


def test_perceptual_keeps_the_zoo_losses_and_needs_the_vgg16_weights(tmp_path, monkeypatch):
    preset = reproduce_paper.preset_file(reproduce_paper.PRESETS['cpu'], True, str(tmp_path))
    table3 = {p.rsplit('/', 1)[1]: yaml.safe_load(open(p))
              for p in reproduce_paper.derived_files('table3', preset, str(tmp_path / 't3'))}
    losses = {name: opt['train'].get('perceptual_opt') for name, opt in table3.items() if 'train' in opt['datasets']}
    assert losses['SRGAN_MSRResNet_x4.yml']['perceptual_weight'] == 1.0  # each file's own recipe
    assert losses['MRDAB_GAN_x2_bicubic_skip.yml']['perceptual_weight'] == 0.1
    assert losses['MRDAB_GAN_x4.yml']['vgg_type'] == 'vgg16' and losses['EDSR_f64b8_x4.yml'] is None
    assert table3['MRDAB_GAN_x4.yml']['train']['total_iter'] == 400  # the rest of the preset still applies
    assert reproduce_paper.preset_file(reproduce_paper.PRESETS['cpu'], False, str(tmp_path)).endswith('cpu.yml')

    monkeypatch.setenv('MRSR_WEIGHTS', str(tmp_path / 'empty_cache'))
    with pytest.raises(BenchmarkError, match='vgg16_imagenet_features'):
        reproduce_paper.preset_file(reproduce_paper.PRESETS['cpu'], True, str(tmp_path))


def _curve_args(**kw):
    args = dict(preset='cpu', tables=['3'], only=['EDSR'], perceptual=False, data='data', retest=None, device='cpu',
                metrics=None, budgets=[400, 100])
    return argparse.Namespace(**{**args, **kw})


def test_learning_curve_runs_each_budget_once_and_resumes(tmp_path, monkeypatch):
    ran, resumed = [], []

    def run_once(args, out, iters, retest=None, resume=False):  # what benchmark_zoo writes, without training
        ran.append(iters)
        resumed.append(resume)
        os.makedirs(os.path.join(out, 'table3'), exist_ok=resume)
        with open(os.path.join(out, 'preset.json'), 'w') as f:
            json.dump(reproduce_paper._record(args, iters, reproduce_paper.iters_overrides(iters)), f)
        for name, header, rows in (
                ('intervals.csv', 'scale,model,metric,low,high,mean,diff,diff_low,diff_high',
                 ['4,Bicubic,mr_psnr,22,23,22.5,,,', f'4,EDSR,mr_psnr,23,24,23.5,{iters / 400},0.1,{iters / 300}']),
                ('patients.csv', 'scale,model,patient,mr_psnr', ['4,EDSR,case0004,23.4']),
                ('slices.csv', 'scale,model,key,patient,mr_psnr',
                 [f'4,{model},case000{p}_00_s00{s},case000{p},{23 + s + (iters / 100 if model == "M" else 0)}'
                  for model in ('Bicubic', 'EDSR', 'M') for p in (3, 4) for s in (0, 1)])):
            with open(os.path.join(out, 'table3', name), 'w') as f:
                f.write('\n'.join([header] + rows) + '\n')
        with open(os.path.join(out, 'wall_time.json'), 'w') as f:
            json.dump({'table3': 1.0}, f)

    monkeypatch.setattr(reproduce_paper, 'run_once', run_once)
    out = str(tmp_path / 'curve')
    reproduce_paper.learning_curve(_curve_args(), out)
    assert ran == [100, 400]
    rows = list(csv.DictReader(open(os.path.join(out, 'curve.csv'))))
    assert [(r['iters'], r['model']) for r in rows] == [('100', 'Bicubic'), ('100', 'EDSR'), ('400', 'Bicubic'),
                                                        ('400', 'EDSR')]
    assert rows[-1]['diff'] == '1.0' and os.path.getsize(os.path.join(out, 'curve.png')) > 1000
    assert len(list(csv.DictReader(open(os.path.join(out, 'curve_patients.csv'))))) == 2
    versus = list(csv.DictReader(open(os.path.join(out, 'curve_versus.csv'))))
    assert [(r['iters'], r['model'], r['versus'], float(r['diff']), float(r['diff_low'])) for r in versus] == [
        ('100', 'M', 'EDSR', 1.0, 1.0), ('400', 'M', 'EDSR', 4.0, 4.0)]  # a constant paired gap, a zero-width interval

    reproduce_paper.learning_curve(_curve_args(budgets=[100, 400, 1600]), out)
    assert ran == [100, 400, 1600]  # the complete budgets were kept
    with pytest.raises(BenchmarkError, match='other settings'):
        reproduce_paper.learning_curve(_curve_args(only=['SRGAN'], budgets=[100]), out)
    os.makedirs(os.path.join(out, 'iters-5'))  # no record of its settings
    with pytest.raises(BenchmarkError, match='other settings'):
        reproduce_paper.learning_curve(_curve_args(budgets=[5]), out)
    os.remove(os.path.join(out, 'iters-400', 'wall_time.json'))  # interrupted, same settings: completed in place
    reproduce_paper.learning_curve(_curve_args(budgets=[100, 400]), out)
    assert ran[-1] == 400 and resumed == [False, False, False, True]


def test_one_iteration_trains_tests_and_retests(prostate3t_prepared, tmp_path):
    out = tmp_path / 'paper'
    proc = run_python([SCRIPT, '--iters', '1', '--tables', '12', '--only', 'Bicubic_x4', 'k3_residual_matched',
                       '--data', str(prostate3t_prepared), '--output', str(out), '--device', 'cpu', '--metrics',
                       'mr_psnr'], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert json.loads((out / 'preset.json').read_text())['iters'] == 1
    assert set(json.loads((out / 'wall_time.json').read_text())) == {'ablation'}
    results = json.loads((out / 'ablation' / 'results.json').read_text())['results']
    assert [r['model'] for r in results] == ['Bicubic', 'table1_k3_residual_matched']
    assert 'table1_k3_residual_matched' in (out / 'ablation' / 'table3.md').read_text().split('difference to')[1]

    again = run_python([SCRIPT, '--retest', str(out), '--tables', '12', '--only', 'matched', '--data',
                        str(prostate3t_prepared), '--output', str(tmp_path / 'retest'), '--device', 'cpu', '--metrics',
                        'mr_psnr'],
                       cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:]
    retested = json.loads((tmp_path / 'retest' / 'ablation' / 'results.json').read_text())['results']
    assert retested[-1]['mr_psnr'] == results[-1]['mr_psnr']  # the same checkpoint, the same numbers

    curve = tmp_path / 'curve'  # the learning-curve files from a real run's tables
    shutil.copytree(out, curve / 'iters-1')
    reproduce_paper.write_curve(str(curve), [1])
    rows = list(csv.DictReader(open(curve / 'curve.csv')))
    assert {(r['iters'], r['model'], r['metric']) for r in rows} == {
        ('1', 'Bicubic', 'mr_psnr'), ('1', 'table1_k3_residual_matched', 'mr_psnr')}
    assert (curve / 'curve.png').stat().st_size > 1000

    clash = run_python([SCRIPT, '--output', str(out), '--data', str(prostate3t_prepared)], cwd=tmp_path)
    assert clash.returncode == 2 and 'never overwritten' in clash.stdout
