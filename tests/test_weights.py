"""Weights by name: a manifest written here whose entry points at a checkpoint through a file:// URL, the cache
folder, the sha256 check, and the two places that take a name: mrsr-infer -w and path.pretrain_network_g. The
checkpoint describes itself (mrsr_plugin.checkpoint); the manifest holds only where it is, its sum and its card."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.models import build_model
from conftest import phantom, run_infer, tiny_options

from mrsr_plugin import checkpoint, weights
from mrsr_plugin.cli.weights import main as weights_main
from mrsr_plugin.archs.mrdab_arch import MRDABNet
from mrsr_plugin.errors import MRSRUserError

NETWORK_G = dict(type='MRDABNet', num_in_ch=1, num_out_ch=1, num_feat=8, num_block=1, num_groups=1, growth=4,
                 upscale=2)


def _entry(url, sha256, **changes):
    return dict({
        'description': 'A tiny test generator.',
        'training': {'data': 'none (random weights)', 'command': 'pytest', 'duration': '0 iterations',
                     'hardware': 'any'},
        'metrics': {'mr_psnr': 'not measured'}, 'limits': 'Research use only, not for diagnosis.',
        'sha256': sha256, 'url': url
    }, **changes)


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A checkpoint 'on a server' (file://), a manifest naming it and an empty cache folder, via the environment."""
    torch.manual_seed(0)
    net = MRDABNet(**{k: v for k, v in NETWORK_G.items() if k != 'type'})
    server = tmp_path / 'server'
    server.mkdir()
    path = server / 'tiny_x2.pth'
    checkpoint.save(str(path), {'params': net.state_dict()},
                    checkpoint.training_info({'network_g': NETWORK_G, 'scale': 2, 'name': 'tiny'}, net))
    digest = weights.sha256_of(path)
    (tmp_path / 'shipped').mkdir()
    (tmp_path / 'shipped' / 'tiny_x2.pth').write_bytes(path.read_bytes())
    manifest = tmp_path / 'weights.yml'
    manifest.write_text(yaml.safe_dump({'weights': {
        'tiny_x2': _entry(path.as_uri(), digest),
        'tiny_x2_wrong_sum': _entry((server / 'copy' / 'tiny_x2.pth').as_uri(), '0' * 64),
        'tiny_x2_gone': _entry((server / 'gone.pth').as_uri(), digest),
        'tiny_x2_shipped': _entry('shipped/tiny_x2.pth', digest),
    }}))
    (server / 'copy').mkdir()
    (server / 'copy' / 'tiny_x2.pth').write_bytes(path.read_bytes())
    monkeypatch.setenv('MRSR_WEIGHTS_MANIFEST', str(manifest))
    monkeypatch.setenv('MRSR_WEIGHTS', str(tmp_path / 'cache'))
    return {'net': net, 'checkpoint': path, 'cache': tmp_path / 'cache', 'tmp': tmp_path}


def _one_line_error(call):
    with pytest.raises(MRSRUserError) as err:
        call()
    assert '\n' not in str(err.value)
    return str(err.value)


def test_name_downloads_once_into_the_cache_and_checks_the_sum(served):
    path, entry = weights.resolve('tiny_x2')
    assert path == str(served['cache'] / f'tiny_x2-{entry["sha256"][:8]}.pth')
    assert weights.sha256_of(path) == entry['sha256']
    os.remove(served['checkpoint'])  # the server is gone: the cached file serves
    assert weights.resolve('tiny_x2')[0] == path
    assert weights.resolve(path) == (path, None)  # a file is taken as it is


def test_checksum_mismatch_is_refused_in_one_line(served):
    message = _one_line_error(lambda: weights.resolve('tiny_x2_wrong_sum'))
    assert 'tiny_x2_wrong_sum' in message and '0' * 64 in message and 'deleted' in message
    assert not os.listdir(served['cache'])  # a download that does not match is not kept

    path, entry = weights.resolve('tiny_x2')
    with open(path, 'ab') as f:  # a cached file changed afterwards is refused, and left for the user
        f.write(b'x')
    message = _one_line_error(lambda: weights.resolve('tiny_x2'))
    assert message.startswith(f'{path}: sha256 ') and entry['sha256'] in message and 'delete it' in message
    assert os.path.exists(path)


def test_unknown_name_missing_download_and_shipped_file(served):
    message = _one_line_error(lambda: weights.resolve('mrdab_x9'))
    assert message.startswith('mrdab_x9: no such file') and 'tiny_x2, tiny_x2_gone, tiny_x2_shipped' in message
    message = _one_line_error(lambda: weights.resolve('tiny_x2_gone'))
    assert 'cannot download' in message and str(served['cache'] / 'tiny_x2_gone-') in message
    assert weights.resolve('tiny_x2_shipped')[0] == str(served['tmp'] / 'shipped' / 'tiny_x2.pth')
    assert not served['cache'].exists() or not os.listdir(served['cache'])  # shipped files are not copied


def test_incomplete_entries_are_named(tmp_path):
    manifest = tmp_path / 'bad.yml'
    entry = _entry('file:///x.pth', 'ABC')
    del entry['limits'], entry['training']['duration']
    manifest.write_text(yaml.safe_dump({'weights': {'half': entry}}))
    message = _one_line_error(lambda: weights.load_manifest(str(manifest)))
    assert message == f'{manifest}: entry half lacks limits, training.duration'
    entry = _entry('file:///x.pth', 'ABC')
    manifest.write_text(yaml.safe_dump({'weights': {'upper': entry}}))
    assert 'sha256 must be 64 lower-case hex digits' in _one_line_error(lambda: weights.load_manifest(str(manifest)))


def test_shipped_manifest_loads_and_every_entry_has_a_card():
    entries = weights.load_manifest(weights.DEFAULT_MANIFEST)
    for name, entry in entries.items():
        assert 'not for diagnosis' in entry['limits'].lower()
        assert 'network_g' not in entry  # the checkpoint says it
        info = checkpoint.read(weights.resolve(name)[0])[1]
        card = weights.model_card(name, entry, info)
        assert card.startswith(f'### {name}\n') and f'| network | {checkpoint.summary(info)} |' in card


def test_model_card_and_listing(served, capsys):
    weights_main([])
    listing = capsys.readouterr().out
    assert '4 entries' in listing and 'tiny_x2_shipped: x2, 1 channel(s), MRDABNet' in listing
    assert 'tiny_x2: not downloaded yet' in listing  # listing downloads nothing
    weights_main(['tiny_x2_shipped'])
    card = capsys.readouterr().out
    assert '| network_g | MRDABNet(num_in_ch=1, num_out_ch=1, num_feat=8, num_block=1, num_groups=1, growth=4, ' \
        'upscale=2) |' in card and '| intensity window | not recorded |' in card
    weights_main(['tiny_x2'])
    card = capsys.readouterr().out
    for text in ('### tiny_x2', 'A tiny test generator.', '| network | not downloaded yet |',
                 '| trained on | none (random weights) |',
                 '| how long | 0 iterations |', '| hardware | any |', '| command | `pytest` |',
                 'mr_psnr not measured', '**Limits.** Research use only, not for diagnosis.'):
        assert text in card
    with pytest.raises(SystemExit) as exit_:
        weights_main(['nope'])
    assert exit_.value.code == 2 and 'nope: not in' in capsys.readouterr().err


def test_infer_takes_a_name_and_its_network_from_the_checkpoint(served, capsys):
    tmp = served['tmp']
    cv2.imwrite(str(tmp / 'slice.png'), phantom(np.random.default_rng(0), 40, bit_depth=16))
    assert run_infer('-i', tmp / 'slice.png', '-o', tmp / 'by_name', '-w', 'tiny_x2', '-q') == 0
    assert run_infer('-i', tmp / 'slice.png', '-o', tmp / 'by_path', '-w', served['checkpoint'],
                     '--arch-args', json.dumps(NETWORK_G), '-q') == 0
    by_name, by_path = (cv2.imread(str(tmp / out / 'slice_SRx2' / 'slice.png'), cv2.IMREAD_UNCHANGED)
                        for out in ('by_name', 'by_path'))
    assert by_name.shape == (80, 80) and (by_name == by_path).all()

    assert run_infer('-i', tmp / 'slice.png', '-o', tmp / 'bad', '-w', 'tiny_x2_wrong_sum', '-q') == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the download's progress bar
    assert err.startswith('mrsr-infer: error: ') and 'tiny_x2_wrong_sum' in err and 'deleted' in err
    torch.save({'params': served['net'].state_dict()}, tmp / 'old.pth')  # without the mrsr block
    assert run_infer('-i', tmp / 'slice.png', '-o', tmp / 'bad', '-w', tmp / 'old.pth', '-q') == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'its network_g is missing; pass -opt or --arch-args' in err


@pytest.mark.parametrize('model_type', ['MRSRModel', 'MRSRGANModel'])
def test_pretrain_network_g_takes_a_name(served, model_type):
    opt = tiny_options(served['tmp'], 'named', model_type=model_type)
    opt['network_g'] = dict(NETWORK_G)
    opt.update(is_train=False, dist=False, rank=0, world_size=1)
    opt['path']['pretrain_network_g'] = 'tiny_x2'
    model = build_model(opt)
    assert model.opt['path']['pretrain_network_g'] == weights.resolve('tiny_x2')[0]
    loaded = model.get_bare_model(model.net_g).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in served['net'].state_dict().items())

    opt['path']['pretrain_network_g'] = 'tiny_x2_wrong_sum'
    with pytest.raises(MRSRUserError, match='tiny_x2_wrong_sum'):
        build_model(opt)
