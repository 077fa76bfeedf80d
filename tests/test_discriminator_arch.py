"""Unit tests of the BN/IN discriminator (bnin_discriminator_arch.py)."""
import pytest
import torch
from basicsr.archs import build_network
from basicsr.losses.gan_loss import GANLoss
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

from mrsr_plugin.archs.bnin_discriminator_arch import DEFAULT_NORMS, BNINDiscriminator

SMALL = dict(num_feat=8, head_feat=16)


def conv_blocks(net):
    """(conv, norm) pairs of the feature extractor, in order."""
    layers = list(net.features)
    return [(layer, layers[i + 1]) for i, layer in enumerate(layers) if isinstance(layer, nn.Conv2d)]


@pytest.mark.parametrize('size', [32, 48, 64, 96, 128, 200])
@pytest.mark.parametrize('in_ch', [1, 3])
def test_output_shape(size, in_ch):
    net = BNINDiscriminator(num_in_ch=in_ch, **SMALL)
    out = net(torch.rand(2, in_ch, size, size))
    assert out.shape == (2, 1)
    assert torch.isfinite(out).all()


def test_non_square_input():
    net = BNINDiscriminator(**SMALL)
    assert net(torch.rand(2, 3, 40, 72)).shape == (2, 1)


def test_output_is_a_raw_logit():
    """No sigmoid at the end: GANLoss('vanilla') applies it. Zero last weights + bias 3 => output 3 exactly."""
    net = BNINDiscriminator(**SMALL)
    last = net.head[-2]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(3.)
    assert torch.equal(net(torch.rand(2, 3, 32, 32)), torch.full((2, 1), 3.))


@pytest.mark.parametrize('h, w', [(16, 16), (31, 31), (64, 20)])
def test_too_small_input_raises(h, w):
    net = BNINDiscriminator(**SMALL)  # 8 blocks, 4 of stride 2: at least 32x32
    with pytest.raises(ValueError, match=rf'32x32.*\({h}, {w}\)'):
        net(torch.rand(2, 3, h, w))


def test_minimum_size_follows_number_of_blocks():
    net = BNINDiscriminator(norms=['none', 'in', 'bn', 'in'], **SMALL)  # 2 stride-2 blocks: at least 8x8
    assert net(torch.rand(2, 3, 8, 8)).shape == (2, 1)
    with pytest.raises(ValueError, match='8x8'):
        net(torch.rand(2, 3, 7, 7))


def test_default_norms():
    blocks = conv_blocks(BNINDiscriminator(**SMALL))
    assert len(blocks) == len(DEFAULT_NORMS) == 8
    expected = {'none': nn.Identity, 'bn': nn.BatchNorm2d, 'in': nn.InstanceNorm2d}
    assert [type(norm) for _, norm in blocks] == [expected[n] for n in DEFAULT_NORMS]
    assert [conv.stride for conv, _ in blocks] == [(1, 1), (2, 2)] * 4


def test_norms_argument_selects_layers():
    norms = ['bn', 'in', 'none', 'in', 'bn']
    net = BNINDiscriminator(norms=norms, **SMALL)
    blocks = conv_blocks(net)
    assert len(blocks) == len(norms)
    for norm_type, (conv, norm) in zip(norms, blocks):
        if norm_type == 'bn':
            assert isinstance(norm, nn.BatchNorm2d)
        elif norm_type == 'in':
            assert isinstance(norm, nn.InstanceNorm2d)
        else:
            assert not isinstance(norm, (nn.BatchNorm2d, nn.InstanceNorm2d))
        assert (conv.bias is None) == (norm_type != 'none')  # normed convs need no bias
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 2
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in net.modules()) == 2
    assert net(torch.rand(2, 3, 16, 16)).shape == (2, 1)


@pytest.mark.parametrize('n_blocks', [1, 3, 10])
def test_norms_length_sets_number_of_blocks(n_blocks):
    net = BNINDiscriminator(norms=['bn'] * n_blocks, **SMALL)
    assert len(conv_blocks(net)) == n_blocks
    assert net(torch.rand(2, 3, 64, 64)).shape == (2, 1)


@pytest.mark.parametrize('norms', [['bn', 'gn'], ['BN'], ['in', None], []])
def test_invalid_norms_raise(norms):
    with pytest.raises(ValueError):
        BNINDiscriminator(norms=norms, **SMALL)


@pytest.mark.parametrize('target_is_real', [True, False])
def test_works_with_basicsr_gan_loss(target_is_real):
    torch.manual_seed(0)
    net = BNINDiscriminator(**SMALL)
    gan_loss = GANLoss('vanilla', loss_weight=1.0)
    logits = net(torch.rand(2, 3, 32, 32))
    loss = gan_loss(logits, target_is_real)
    assert loss.dim() == 0
    assert torch.isfinite(loss)
    target = torch.full_like(logits, 1. if target_is_real else 0.)
    assert torch.allclose(loss, F.binary_cross_entropy_with_logits(logits, target))
    loss.backward()
    no_grad = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_registered_and_buildable():
    assert ARCH_REGISTRY.get('BNINDiscriminator') is BNINDiscriminator
    net = build_network(dict(type='BNINDiscriminator', num_in_ch=1, norms=['none', 'in', 'bn'], **SMALL))
    assert isinstance(net, BNINDiscriminator)
    assert net(torch.rand(2, 1, 16, 16)).shape == (2, 1)


# --------------------------------------------------------------------------------------------------------------------
# head: gap (default) or dense (SRGAN's flatten + dense layers, fixed input size)
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('size', [32, (40, 72), [33, 128]])
def test_dense_head_shapes_and_gradients(size):
    torch.manual_seed(0)
    net = BNINDiscriminator(num_in_ch=1, head='dense', input_size=size, **SMALL)
    h, w = (size, size) if isinstance(size, int) else size
    assert [type(m) for m in net.head] == [nn.Flatten, nn.Linear, nn.LeakyReLU, nn.Linear]
    # 4 stride-2 blocks: ceil(n / 2) four times; width 8 * 2**3 = 64 after them
    assert net.head[1].in_features == 64 * -(-h // 16) * -(-w // 16) and net.head[1].out_features == 16
    out = net(torch.rand(2, 1, h, w))
    assert out.shape == (2, 1)
    GANLoss('vanilla', loss_weight=1.0)(out, True).backward()
    assert [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


def test_dense_head_refuses_another_size_in_one_line():
    net = BNINDiscriminator(head='dense', input_size=64, **SMALL)
    with pytest.raises(ValueError, match=r'^BNINDiscriminator was built for 64x64 inputs \(input_size\), got '
                                         r'\(32, 32\)$'):
        net(torch.rand(2, 3, 32, 32))


def test_gap_head_checks_input_size_only_when_given():
    assert BNINDiscriminator(**SMALL).head[0].output_size == 1
    with pytest.raises(ValueError, match='built for 64x64'):
        BNINDiscriminator(input_size=64, **SMALL)(torch.rand(2, 3, 32, 32))


@pytest.mark.parametrize('kwargs, message', [
    (dict(head='dense'), "head 'dense' needs input_size"),
    (dict(head='flatten'), 'head must be one of'),
    (dict(head='dense', input_size=16), r'input_size \[16, 16\] is under the 32x32 pixels'),
    (dict(head='dense', input_size=[64, 64, 3]), 'input_size must be a positive int or'),
])
def test_bad_head_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BNINDiscriminator(**kwargs, **SMALL)


def test_dense_head_from_options():
    net = build_network(dict(type='BNINDiscriminator', num_in_ch=3, head='dense', input_size=128, **SMALL))
    assert net(torch.rand(1, 3, 128, 128)).shape == (1, 1)
    assert net.head[1].in_features == 64 * 8 * 8
