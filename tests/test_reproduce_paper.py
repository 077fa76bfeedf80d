"""scripts/reproduce_paper.py end to end on the embedded prostate MR with a one-iteration budget, and its presets."""
import json

import yaml
from conftest import REPO, run_python

from mrsr_plugin.apps import reproduce as reproduce_paper
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

    clash = run_python([SCRIPT, '--output', str(out), '--data', str(prostate3t_prepared)], cwd=tmp_path)
    assert clash.returncode == 2 and 'never overwritten' in clash.stdout
