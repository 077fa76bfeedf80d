"""Option files by composition (mrsr_plugin/options.py): the rules, the overrides, the presets, the generated files
and the plugin's entry points reading a composed file."""
import glob
import os

import pytest
import yaml
from basicsr.utils.options import ordered_yaml
from conftest import REPO

from mrsr_plugin import options
from mrsr_plugin.cli.common import plain_argv
from mrsr_plugin.cli.options import main as options_main
from mrsr_plugin.options import OptionFileError, load_options

OPTIONS = os.path.join(REPO, 'options')
# every file a user runs: the zoo's train/test files, the ablation rows, the through-plane files, the released models'
# files (not their shared overlay _cpu.yml), the demo base
RUNNABLE = sorted(glob.glob(f'{OPTIONS}/zoo/t*_x?.yml') + glob.glob(f'{OPTIONS}/ablation/*.yml') +
                  glob.glob(f'{OPTIONS}/through_plane/*.yml') + glob.glob(f'{OPTIONS}/release/[!_]*.yml')) + [
                      f'{OPTIONS}/_base_/demo.yml']


def write(folder, name, text):
    path = os.path.join(folder, name)
    with open(path, 'w') as f:
        f.write(text)
    return path


# --------------------------------------------------------------------------------------------------------------------
# The rules: _base_, _delete_, ${...}, _ keys
# --------------------------------------------------------------------------------------------------------------------
def test_bases_merge_in_order_and_references_resolve_after(tmp_path):
    write(tmp_path, 'a.yml', '_root: /data\nname: run_x${scale}\nnet: {upscale: "${scale}", width: 8, pair: [1, 2]}\n'
          'val: {metrics: {psnr: {crop_border: "${scale}"}, ssim: {crop_border: 0}}}\n')
    write(tmp_path, 'b.yml', 'net: {width: 16}\nroot: ${_root}/LR_x${scale}.lmdb\n')
    leaf = write(tmp_path, 'leaf.yml', '_base_: [a.yml, b.yml]\nscale: 2\nnet: {pair: [3]}\n'
                 'val: {metrics: {_delete_: true, mr: {crop: "${net:width}"}}}\n')
    opt = load_options(leaf)
    assert opt == {'name': 'run_x2', 'scale': 2, 'net': {'upscale': 2, 'width': 16, 'pair': [3]},
                   'val': {'metrics': {'mr': {'crop': 16}}}, 'root': '/data/LR_x2.lmdb'}
    assert list(opt)[:2] == ['name', 'scale']  # BasicSR's order
    assert options.is_composed(leaf) and not options.is_composed(write(tmp_path, 'plain.yml', 'name: x\n'))


@pytest.mark.parametrize('text, message', [
    ('a: ${nowhere}\n', r'^.*leaf.yml: \$\{nowhere\} in a names no key$'),
    ('a: ${b}\nb: ${a}\n', r'refers to itself \(in a\)'),
    ('a: x${b}\nb: {c: 1}\n', r"\$\{b\} in a is \{'c': 1\}, which cannot be part of a string"),
    ('_base_: leaf.yml\n', '_base_ loops back to'),
    ('_base_: missing.yml\n', r'missing.yml: cannot read option file'),
    ('[1, 2]\n', 'not a YAML mapping of options'),
    ('a: [1\n', 'not a YAML option file'),
])
def test_bad_compositions_are_one_line_naming_the_file(tmp_path, text, message):
    leaf = write(tmp_path, 'leaf.yml', text)
    with pytest.raises(OptionFileError, match=message) as err:
        load_options(leaf)
    assert '\n' not in str(err.value) and str(tmp_path) in str(err.value)


# --------------------------------------------------------------------------------------------------------------------
# Overrides (BasicSR's --force_yml syntax) and presets
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('entry, expected', [
    ('manual_seed=3', (('manual_seed', ), 3)),
    ('train:optim_g:lr=!!float 5e-4', (('train', 'optim_g', 'lr'), 5e-4)),
    ('train:perceptual_opt=~', (('train', 'perceptual_opt'), None)),
    ('datasets:train:use_rot=false', (('datasets', 'train', 'use_rot'), False)),
    ('val:val_freq=0.5', (('val', 'val_freq'), 0.5)),
    ('network_g:kernel_sizes=[3, 5]', (('network_g', 'kernel_sizes'), [3, 5])),
    ('name = my_run', (('name', ), 'my_run')),
])
def test_override_values_are_read_as_basicsr_reads_them(entry, expected):
    assert options.parse_override(entry) == expected


@pytest.mark.parametrize('entry', ['scale', ':a=1', 'a::b=1', 'a=[1,'])
def test_bad_override_is_one_line(entry):
    with pytest.raises(OptionFileError, match='--force_yml'):
        options.parse_override(entry)


def test_the_scale_stated_once_derives_the_rest():
    x4 = load_options(f'{OPTIONS}/zoo/train_srgan_x4.yml')
    x2 = load_options(f'{OPTIONS}/zoo/train_srgan_x4.yml', ['scale=2'])
    assert x2 == load_options(f'{OPTIONS}/zoo/train_srgan_x2.yml')
    assert (x4['name'], x2['name']) == ('SRGAN_MSRResNet_x4', 'SRGAN_MSRResNet_x2')
    assert x2['network_g']['upscale'] == 2 and x2['datasets']['val']['dataroot_lq'].endswith('/val/LR_x2.lmdb')
    assert {m['crop_border'] for m in x2['val']['metrics'].values()} == {2}


def test_one_shared_setting_is_one_value():
    """The data root, the channels and the crop: one override changes them everywhere they appear."""
    for path in glob.glob(f'{OPTIONS}/zoo/t*_x?.yml') + glob.glob(f'{OPTIONS}/ablation/*.yml'):
        opt = load_options(path, ['_data=/elsewhere', '_channels=1', 'datasets:train:gt_size=96'], missing='skip')
        roots = [v for d in opt['datasets'].values() for k, v in d.items() if k.startswith('dataroot')]
        assert roots and all(root.startswith('/elsewhere/') for root in roots), path
        assert {d['num_channels'] for d in opt['datasets'].values()} == {1}
        assert opt['network_g']['num_in_ch'] == 1 and opt['network_g'].get('num_out_ch', 1) == 1
        if 'network_d' in opt:
            assert opt['network_d']['num_in_ch'] == 1
            assert opt['network_d'].get('input_size', 96) == opt['datasets']['train']['gt_size'] == 96


def test_override_of_a_missing_block_is_an_error_or_skipped():
    bicubic = f'{OPTIONS}/zoo/test_bicubic_x2.yml'
    with pytest.raises(OptionFileError, match=r'test_bicubic_x2.yml: --force_yml datasets:train:gt_size: the file '
                                              r'has no block datasets:train$'):
        load_options(bicubic, ['datasets:train:gt_size=64'])
    assert load_options(bicubic, ['datasets:train:gt_size=64'], missing='skip') == load_options(bicubic)


def test_cpu_preset_lands_where_it_applies():
    cpu = f'{OPTIONS}/presets/cpu.yml'
    mrdab = load_options(f'{OPTIONS}/zoo/train_mrdab_x2.yml', presets=[cpu])
    assert (mrdab['network_g']['num_feat'], mrdab['network_g']['num_block'], mrdab['network_g']['num_groups']) == \
        (32, 2, 3)
    assert mrdab['network_d']['num_feat'] == 32 and mrdab['train']['optim_d']['lr'] == 5e-4
    assert mrdab['train']['perceptual_opt'] is None and mrdab['datasets']['train']['batch_size_per_gpu'] == 4
    edsr, plain_edsr = load_options(f'{OPTIONS}/zoo/train_edsr_x2.yml', presets=[cpu]), load_options(
        f'{OPTIONS}/zoo/train_edsr_x2.yml')
    assert edsr['network_g'] == plain_edsr['network_g'] and 'optim_d' not in edsr['train']  # not an MRDABNet
    assert edsr['train']['optim_g']['lr'] == 5e-4 and edsr['train']['scheduler']['milestones'] == [280]
    bicubic = f'{OPTIONS}/zoo/test_bicubic_x4.yml'
    assert load_options(bicubic, presets=[cpu]) == load_options(bicubic)  # a test file: nothing to change


# --------------------------------------------------------------------------------------------------------------------
# The files under options/
# --------------------------------------------------------------------------------------------------------------------
def test_generated_files_equal_their_composition():
    """options/*.yml are what `make options` writes now, and BasicSR's own reader gets the
    same options from them as the plugin from their sources."""
    assert sorted(os.path.basename(p) for p in glob.glob(f'{OPTIONS}/*.yml')) == sorted(options.GENERATED)
    assert options.write_generated(check=True) == []
    for target, source in options.GENERATED.items():
        with open(os.path.join(OPTIONS, target)) as f:
            assert f.readline().startswith(f'# Generated by `make options` from '
                                           f'options/{source} ')
            f.seek(0)
            basicsr_reads = yaml.load(f, Loader=ordered_yaml()[0])
        assert not options.is_composed(os.path.join(OPTIONS, target))
        assert basicsr_reads == load_options(os.path.join(OPTIONS, source))  # OrderedDicts equal to dicts


@pytest.mark.parametrize('path', RUNNABLE, ids=lambda p: os.path.relpath(p, OPTIONS))
def test_every_runnable_file_composes(path):
    opt = load_options(path)
    assert opt['name'] and opt['scale'] == opt['network_g']['upscale'] and not any(k.startswith('_') for k in opt)
    assert '${' not in yaml.safe_dump(opt)


def test_option_lines_a_maintainer_reads():
    """The sources (bases, overlays, presets), not the generated files: under half of the 4,431 lines of the 41
    near-copies they replaced."""
    sources = [p for p in glob.glob(f'{OPTIONS}/**/*.yml', recursive=True) if os.path.dirname(p) != OPTIONS]
    assert sum(len(open(p).readlines()) for p in sources) < 4431 / 2


# --------------------------------------------------------------------------------------------------------------------
# The plugin's train.py / test.py and `python -m mrsr_plugin.options`
# --------------------------------------------------------------------------------------------------------------------
def test_entry_hands_basicsr_the_plain_file_of_a_composed_one(tmp_path):
    zoo = f'{OPTIONS}/zoo/train_edsr_x4.yml'
    argv = plain_argv(['train.py', '-opt', zoo, '--force_yml', 'scale=2', 'num_gpu=0', '--auto_resume'], tmp_path)
    assert argv == ['train.py', '-opt', str(tmp_path / 'train_edsr_x4.yml'), '--auto_resume']
    with open(argv[2]) as f:
        assert f.readline() == f'# Composed by mrsr_plugin from {zoo}\n'
        f.seek(0)
        assert yaml.safe_load(f) == load_options(zoo, ['scale=2', 'num_gpu=0'])
    generated = ['test.py', '-opt', f'{OPTIONS}/test_mrdab_x4.yml', '--force_yml', 'num_gpu=0']
    assert plain_argv(generated, tmp_path) == generated  # a plain file: BasicSR reads it and its --force_yml itself


def test_module_prints_writes_and_checks(tmp_path, capsys):
    options_main([f'{OPTIONS}/zoo/test_edsr_x4.yml', '--force_yml', 'scale=2'])
    assert yaml.safe_load(capsys.readouterr().out) == load_options(f'{OPTIONS}/zoo/test_edsr_x2.yml')
    options_main([f'{OPTIONS}/zoo/test_edsr_x4.yml', '-o', str(tmp_path / 'edsr.yml')])
    assert yaml.safe_load((tmp_path / 'edsr.yml').read_text())['name'] == 'test_EDSR_f64b8_x4'
    with pytest.raises(SystemExit) as done:
        options_main(['--check'])
    assert done.value.code == 0 and capsys.readouterr().out == 'all current\n'
    with pytest.raises(SystemExit) as failed:
        options_main([str(tmp_path / 'none.yml')])
    assert failed.value.code == 2 and 'none.yml: cannot read option file' in capsys.readouterr().err
