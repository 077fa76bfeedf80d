"""Checkpoints that describe themselves (mrsr_plugin/checkpoint.py): what a 2-iteration training through the plugin's
model writes, mrsr-infer and evaluate.py with -w alone (a file just trained, a manifest name), flags that contradict
the checkpoint, checkpoints without the block, and the shipped files."""
import inspect
import itertools
import sys

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.models import build_model
from conftest import REPO, phantom, run_infer, tiny_options
from torch.utils.data import DataLoader

from mrsr_plugin.options import load_options
from mrsr_plugin import checkpoint, weights
from mrsr_plugin.apps import prepare
from mrsr_plugin.apps.tinyrun import use_prepared_lmdb, write_options
from mrsr_plugin.cli import prepare as prepare_cli
from mrsr_plugin.cli.evaluate import main as evaluate_main
from mrsr_plugin.data.slice_profile import ThroughPlaneConfig
from mrsr_plugin.version import __version__

SHIPPED = {'mrdab_x2_prostate3t_demo': 'options/demo_mrdab_x2.yml',
           'mrdab_z2_prostate3t_demo': 'options/through_plane/train_mrdab_z2.yml',
           'mrdab_z2thick_prostate3t_demo': 'options/through_plane/train_mrdab_z2_thick.yml',
           'mrdab_z2_3mm_prostate3t': 'options/through_plane/train_mrdab_3mm_contiguous.yml',
           'mrdab_z2_3mm_gap06_prostate3t': 'options/through_plane/train_mrdab_3mm_gap06.yml',
           **{f'mrdab_{kind}_x{s}_prostate3t': f'options/release/mrdab_{kind}_x{s}.yml'
              for kind in ('psnr', 'gan') for s in (2, 4)}}
# make demo's preparation of datasets/prostate3t, the training data of every shipped generator
DEMO_PREPARATION = ['datasets/prostate3t', 'datasets/prostate3t_prepared', '--split-file',
                    'datasets/prostate3t_split.json', '--scales', '2', '4', '--overwrite']


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    """Three patients of two 16-bit 48x48 phantom slices, prepared by mrsr-prepare with a window that is not the
    default (1 / 99 percentiles), so that a checkpoint that passes it on is told from one that does not."""
    root = tmp_path_factory.mktemp('described')
    rng = np.random.default_rng(0)
    for p in range(3):
        (root / 'slices' / f'patient{p}').mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / 'slices' / f'patient{p}' / f'{i}.png'), phantom(rng, 48, bit_depth=16))
    prepare.build(prepare_cli.parse_args([str(root / 'slices'), str(root / 'prepared'), '--scales', '2',
                                          '--percentiles', '1', '99', '--split-ratio', '1', '1', '1', '--quiet']))
    return root / 'prepared'


@pytest.fixture(scope='module')
def trained(prepared, tmp_path_factory):
    """net_g_latest.pth of two iterations of MRSRGANModel (tiny MRDAB) on the prepared LMDBs, run in this process as
    BasicSR's train loop runs it (its option file on the command line, as parse_options read it)."""
    folder = tmp_path_factory.mktemp('trained')
    opt = use_prepared_lmdb(tiny_options(prepared, 'tiny_described', total_iter=2, model_type='MRSRGANModel'),
                            prepared)
    option_file = write_options(folder / 'tiny_described.yml', opt)
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    for key in ('models', 'training_states'):
        opt['path'][key] = str(folder / key)
        (folder / key).mkdir()
    dataset = build_dataset(dict(opt['datasets']['train'], phase='train', scale=opt['scale']))
    torch.manual_seed(0)
    model = build_model(opt)
    batches = itertools.cycle(DataLoader(dataset, batch_size=2, shuffle=True))
    for current_iter in (1, 2):
        model.update_learning_rate(current_iter)
        model.feed_data(next(batches))
        model.optimize_parameters(current_iter)
    argv = sys.argv
    sys.argv = ['train.py', '-opt', option_file]
    try:
        model.save(0, -1)  # BasicSR's last save: net_g_latest.pth
    finally:
        sys.argv = argv
    return {'weights': folder / 'models' / 'net_g_latest.pth', 'opt': option_file, 'network_g': opt['network_g'],
            'net': model.get_bare_model(model.net_g)}


@pytest.fixture(scope='module')
def slice_png(tmp_path_factory):
    path = tmp_path_factory.mktemp('input') / 'slice.png'
    cv2.imwrite(str(path), phantom(np.random.default_rng(5), 40, bit_depth=16))
    return path


def _output(folder):
    return cv2.imread(str(folder / 'slice_SRx2' / 'slice.png'), cv2.IMREAD_UNCHANGED)


def test_training_writes_the_block(trained, prepared):
    saved = torch.load(trained['weights'], weights_only=True)
    assert set(saved) == {'params', 'mrsr'}
    state = trained['net'].state_dict()
    assert all(torch.equal(saved['params'][k], v) for k, v in state.items())
    info = saved['mrsr']
    report = checkpoint.prepared_parameters(str(prepared))
    assert info == {
        'format': 1, 'network_g': trained['network_g'], 'scale': 2, 'channels': {'in': 1, 'out': 1},
        'normalization': {'method': 'percentile', 'percentiles': [1.0, 99.0]}, 'degradation': report['degradation'],
        'slice_profile': None, 'through_plane_scale': None, 'option_file': 'tiny_described.yml',
        'name': 'tiny_described', 'iteration': 2, 'plugin_version': __version__}
    assert report['degradation']['downsample'] == 'bicubic'


def test_infer_and_evaluate_with_w_alone(trained, prepared, slice_png, tmp_path, capsys):
    assert run_infer('-i', slice_png, '-o', tmp_path / 'alone', '-w', trained['weights'], '-q') == 0
    assert capsys.readouterr().err == ''
    # the same as giving everything by hand, and not the default window
    assert run_infer('-i', slice_png, '-o', tmp_path / 'by_hand', '-w', trained['weights'], '-opt', trained['opt'],
                     '--normalize', 'percentile', '--percentiles', 1, 99, '-q') == 0
    assert capsys.readouterr().err == ''
    alone = _output(tmp_path / 'alone')
    assert alone.shape == (80, 80) and np.array_equal(alone, _output(tmp_path / 'by_hand'))

    summary = evaluate_main(['-w', str(trained['weights']), '--data', str(prepared), '--metrics', 'nrmse',
                             '--resamples', '10'])  # MR PSNR and SSIM come anyway: the per-patient table shows them
    assert set(summary) == {'bicubic', 'model'} and capsys.readouterr().err == ''
    assert {'mr_psnr', 'mr_ssim', 'nrmse'} <= set(next(iter(summary['model'].values())))


def test_a_contradicting_flag_wins_with_one_warning(trained, slice_png, tmp_path, capsys):
    assert run_infer('-i', slice_png, '-o', tmp_path / 'default', '-w', trained['weights'], '--percentiles', 0.5,
                     99.5, '-q') == 0
    assert capsys.readouterr().err == (f'warning: --percentiles 0.5 99.5 contradicts {trained["weights"]}, trained '
                                       'with 1 99; using --percentiles\n')
    assert run_infer('-i', slice_png, '-o', tmp_path / 'alone', '-w', trained['weights'], '-q') == 0
    assert not np.array_equal(_output(tmp_path / 'default'), _output(tmp_path / 'alone'))

    other = dict(trained['network_g'], global_skip='bicubic')  # same weights, another network
    option_file = write_options(tmp_path / 'other.yml', {'scale': 2, 'network_g': other})
    assert run_infer('-i', slice_png, '-o', tmp_path / 'other', '-w', trained['weights'], '-opt', option_file,
                     '-q') == 0
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith(f'warning: network_g of {option_file} contradicts the one ')
    assert '(global_skip bicubic vs None: ' in err and err.endswith(f'; using {option_file}\n')


def test_a_checkpoint_without_the_block_needs_its_network(trained, prepared, slice_png, tmp_path, capsys):
    old = tmp_path / 'old.pth'
    torch.save({'params': trained['net'].state_dict()}, old)  # as before, and as BasicSR writes them
    assert run_infer('-i', slice_png, '-o', tmp_path / 'out', '-w', old, '-q') == 2
    missing = (f'{old}: no mrsr block (written before checkpoints described themselves, or by BasicSR itself), so '
               'its network_g is missing; pass -opt or --arch-args')
    assert capsys.readouterr().err == f'mrsr-infer: error: {missing}\n'
    with pytest.raises(SystemExit) as exit_:
        evaluate_main(['-w', str(old), '--data', str(prepared)])
    assert exit_.value.code == 2 and capsys.readouterr().err == f'evaluate: error: {missing}\n'
    assert run_infer('-i', slice_png, '-o', tmp_path / 'out', '-w', old, '-opt', trained['opt'], '--percentiles', 1,
                     99, '-q') == 0  # with -opt, as before
    assert run_infer('-i', slice_png, '-o', tmp_path / 'described', '-w', trained['weights'], '-q') == 0
    assert np.array_equal(_output(tmp_path / 'out'), _output(tmp_path / 'described'))


def test_manifest_names_with_w_alone(prepared, slice_png, tmp_path, capsys):
    assert run_infer('-i', slice_png, '-o', tmp_path / 'shipped', '-w', 'mrdab_x2_prostate3t_demo', '-q') == 0
    assert _output(tmp_path / 'shipped').shape == (80, 80) and capsys.readouterr().err == ''
    # evaluate.py by name on data prepared with another window: runs, and says so in one line
    evaluate_main(['-w', 'mrdab_x2_prostate3t_demo', '--data', str(prepared), '--metrics', 'mr_psnr', 'mr_ssim',
                   '--resamples', '10'])
    assert capsys.readouterr().err == (f'warning: {prepared} was normalised with percentile 1 99, '
                                       'mrdab_x2_prostate3t_demo was trained on data normalised with percentile 0.5 '
                                       '99.5: it sees intensities it was not trained on\n')


def _with_defaults(network_g):
    """network_g with every constructor default of its type filled in (the same network however it is spelled)."""
    from basicsr.utils.registry import ARCH_REGISTRY
    signature = inspect.signature(ARCH_REGISTRY.get(network_g['type']))
    filled = {'type': network_g['type'], **{name: p.default for name, p in signature.parameters.items()
                                            if p.default is not inspect.Parameter.empty}, **network_g}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in filled.items()}


@pytest.mark.parametrize('name', list(SHIPPED))
def test_shipped_files_load_with_weights_only_and_say_what_their_option_file_says(name):
    path = weights.resolve(name)[0]
    saved = torch.load(path, weights_only=True)
    assert set(saved) == {'params_ema', 'mrsr'}
    opt = load_options(f'{REPO}/{SHIPPED[name]}')  # the through-plane files are compositions
    train = opt['datasets']['train']
    profile = ThroughPlaneConfig.from_dict(train['degradation']) if 'ThroughPlane' in train['type'] else None
    args = prepare_cli.parse_args(DEMO_PREPARATION)
    parameters = prepare._report_parameters(args, prepare._degradation_config(args))
    expected = checkpoint.training_info(opt, build_network(dict(opt['network_g'])), opt['train']['total_iter'],
                                        SHIPPED[name], profile, parameters)
    # the same network: the option files now spell out some constructor defaults the shipped block leaves implicit
    assert _with_defaults(saved['mrsr']['network_g']) == _with_defaults(expected['network_g'])
    # and the same slice profile: files written before a profile key existed leave its default implicit
    def same(info):
        profile = info['slice_profile'] and vars(ThroughPlaneConfig.from_dict(info['slice_profile']))
        return {**info, 'network_g': None, 'slice_profile': profile}

    assert same(saved['mrsr']) == same(expected)
    assert checkpoint.summary(saved['mrsr']) == ('through-plane z2' if profile else f'x{opt["scale"]}') + (
        ', 1 channel(s), MRDABNet')
