"""Unit tests of the MRDAB generator (mrdab_arch.py) and its attention modules (attention.py)."""
import math

import pytest
import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from torch.nn import functional as F

from mrsr_plugin.archs.attention import DualParallelAttention, PyramidChannelAttention, SpatialAttention
from mrsr_plugin.archs.mrdab_arch import MSRDB, MRDABNet

TINY = dict(num_feat=8, num_block=1, num_groups=2, growth=4)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------------------------------
# MRDABNet shapes, ablation variants, invalid arguments
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('upscale', [2, 3, 4, 8])
@pytest.mark.parametrize('in_ch, out_ch', [(1, 1), (3, 3), (1, 3)])
@pytest.mark.parametrize('h, w', [(8, 8), (6, 9)])
def test_output_shape(upscale, in_ch, out_ch, h, w):
    model = MRDABNet(num_in_ch=in_ch, num_out_ch=out_ch, upscale=upscale, **TINY)
    with torch.no_grad():
        out = model(torch.rand(2, in_ch, h, w))
    assert out.shape == (2, out_ch, upscale * h, upscale * w)


@pytest.mark.parametrize('kernel_sizes', [[3], [3, 5], [1, 3, 5], [3, 5, 7]])
@pytest.mark.parametrize('connection', ['dense', 'residual'])
def test_table1_variants(kernel_sizes, connection):
    num_feat, num_groups, growth = 8, 2, 4
    model = MRDABNet(num_feat=num_feat, num_block=2, num_groups=num_groups, growth=growth, kernel_sizes=kernel_sizes,
                     connection=connection, upscale=2)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 8, 8))
    assert out.shape == (1, 3, 16, 16)

    branch_ch = len(kernel_sizes) * growth
    expected_in = num_feat + num_groups * branch_ch if connection == 'dense' else branch_ch
    for block in model.blocks:
        msrdb = block.msrdb
        assert msrdb.fusion.in_channels == expected_in
        assert msrdb.fusion.out_channels == num_feat
        assert len(msrdb.groups) == num_groups
        for i, group in enumerate(msrdb.groups):
            assert [conv.kernel_size for conv in group.convs] == [(k, k) for k in kernel_sizes]
            assert all(conv.out_channels == growth for conv in group.convs)
            group_in = num_feat + i * branch_ch if connection == 'dense' or i == 0 else branch_ch
            assert all(conv.in_channels == group_in for conv in group.convs)


@pytest.mark.parametrize('attention, has_sam, has_pcam', [
    ('none', False, False),
    ('sam', True, False),
    ('pcam', False, True),
    ('dpam', True, True),
])
def test_table2_variants(attention, has_sam, has_pcam):
    model = MRDABNet(attention=attention, upscale=2, **TINY)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 8, 8))
    assert out.shape == (1, 3, 16, 16)

    n_sam = sum(isinstance(m, SpatialAttention) for m in model.modules())
    n_pcam = sum(isinstance(m, PyramidChannelAttention) for m in model.modules())
    assert n_sam == (TINY['num_block'] if has_sam else 0)
    assert n_pcam == (TINY['num_block'] if has_pcam else 0)
    for block in model.blocks:
        assert (block.dpam.sam is not None) == has_sam
        assert (block.dpam.pcam is not None) == has_pcam


@pytest.mark.parametrize('kwargs', [
    dict(upscale=5),
    dict(upscale=0),
    dict(upscale=16),
    dict(kernel_sizes=[3, 4]),
    dict(sam_kernel_sizes=[3, 6]),
    dict(connection='skip'),
    dict(attention='cbam'),
])
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        MRDABNet(**{**TINY, **kwargs})


def test_msrdb_invalid_arguments_raise():
    with pytest.raises(ValueError):
        MSRDB(num_feat=8, growth=4, num_groups=1, kernel_sizes=(2, ))
    with pytest.raises(ValueError):
        MSRDB(num_feat=8, growth=4, num_groups=1, connection='concat')
    with pytest.raises(ValueError):
        DualParallelAttention(8, attention='both')


def test_paper_parameter_count():
    """Table 4: 1.84e7 parameters; the module docstring documents the exact count 17,992,683."""
    n = count_params(MRDABNet(num_in_ch=3, num_out_ch=3, upscale=4))
    assert abs(n - 1.84e7) / 1.84e7 < 0.03
    assert n == 17992683


# --------------------------------------------------------------------------------------------------------------------
# SAM, eqs. (7)-(11)
# --------------------------------------------------------------------------------------------------------------------
def _zero_sam(kernel_sizes=(3, 5, 7)):
    sam = SpatialAttention(kernel_sizes)
    with torch.no_grad():
        for conv in sam.convs:
            conv.weight.zero_()
            conv.bias.zero_()
    return sam


# (1, 3, 2, 2): channel max and channel mean computed by hand below
X_SAM = torch.tensor([[[[1., -2.], [0., 4.]], [[3., 0.], [-1., 1.]], [[-4., 5.], [2., 1.]]]])
X_SAM_MAX = torch.tensor([[[[3., 5.], [2., 4.]]]])
X_SAM_MEAN = torch.tensor([[[[0., 1.], [1 / 3, 2.]]]])


def test_sam_structure():
    sam = SpatialAttention((3, 5, 7))
    assert [conv.kernel_size for conv in sam.convs] == [(3, 3), (5, 5), (7, 7)]
    assert all(conv.in_channels == 2 and conv.out_channels == 1 for conv in sam.convs)


def test_sam_zero_weights_gives_sigmoid_of_bias_sum():
    sam = _zero_sam()
    with torch.no_grad():
        for conv, b in zip(sam.convs, (math.log(3), 0.5, -0.5)):
            conv.bias.fill_(b)
    k1 = sam(X_SAM)
    assert k1.shape == (1, 1, 2, 2)
    assert torch.allclose(k1, torch.full((1, 1, 2, 2), 0.75))  # sigmoid(ln 3) = 3 / 4


def test_sam_centre_tap_on_max_channel_gives_sigmoid_of_channel_max():
    sam = _zero_sam()
    with torch.no_grad():
        sam.convs[0].weight[0, 0, 1, 1] = 1.  # 3x3 conv, max-pool channel, centre tap
    assert torch.allclose(sam(X_SAM), torch.sigmoid(X_SAM_MAX))


def test_sam_centre_tap_on_mean_channel_gives_sigmoid_of_channel_mean():
    sam = _zero_sam()
    with torch.no_grad():
        sam.convs[2].weight[0, 1, 3, 3] = 2.  # 7x7 conv, avg-pool channel, centre tap
        sam.convs[1].bias.fill_(-1.)
    assert torch.allclose(sam(X_SAM), torch.sigmoid(2 * X_SAM_MEAN - 1))


def test_sam_off_centre_tap_is_zero_padded_shift():
    sam = _zero_sam()
    with torch.no_grad():
        sam.convs[1].weight[0, 0, 1, 2] = 1.  # 5x5 conv, max channel, one row above the centre
    # output(i, j) = max(i - 1, j), zero above the top row
    expected = torch.tensor([[[[0., 0.], [3., 5.]]]])
    assert torch.allclose(sam(X_SAM), torch.sigmoid(expected))


def test_sam_matches_equations_with_random_weights():
    torch.manual_seed(0)
    sam = SpatialAttention((3, 5, 7))
    x = torch.randn(2, 6, 7, 5)
    p = torch.cat([x.max(dim=1, keepdim=True).values, x.sum(dim=1, keepdim=True) / x.shape[1]], dim=1)
    h = sum(F.conv2d(p, conv.weight, conv.bias, padding=conv.kernel_size[0] // 2) for conv in sam.convs)
    k1 = sam(x)
    assert k1.shape == (2, 1, 7, 5)
    assert torch.allclose(k1, torch.sigmoid(h), atol=1e-6)
    assert ((k1 > 0) & (k1 < 1)).all()


# --------------------------------------------------------------------------------------------------------------------
# PCAM, eqs. (12)-(14)
# --------------------------------------------------------------------------------------------------------------------
def test_pcam_squeezed_vector_is_pyramid_concat():
    pcam = PyramidChannelAttention(num_feat=2)
    x = torch.arange(32.).reshape(1, 2, 4, 4)
    captured = {}
    pcam.fc[0].register_forward_pre_hook(lambda module, args: captured.update(v=args[0].clone()))
    pcam(x)
    # channel 0 holds 0..15, channel 1 holds 16..31 (row major)
    pool1 = [7.5, 23.5]
    pool2 = [2.5, 4.5, 10.5, 12.5, 18.5, 20.5, 26.5, 28.5]
    pool4 = list(range(32))
    expected = torch.tensor([pool1 + pool2 + pool4], dtype=torch.float32)
    assert pcam.fc[0].in_features == 21 * 2
    assert captured['v'].shape == (1, 21 * 2)
    assert torch.equal(captured['v'], expected)


def test_pcam_one_hot_first_layer_picks_one_squeezed_element():
    pcam = PyramidChannelAttention(num_feat=2)  # hidden width max(1, 2 // 16) = 1
    x = torch.arange(32.).reshape(1, 2, 4, 4) / 10
    with torch.no_grad():
        pcam.fc[0].weight.zero_()
        pcam.fc[0].weight[0, 5] = 1.  # squeezed = [pool1 (2), pool2 (8), pool4 (32)]: element 5 = pool2, channel 0, cell 3
        pcam.fc[0].bias.zero_()
        pcam.fc[2].weight.fill_(1.)
        pcam.fc[2].bias.zero_()
    # bottom-right 2x2 average of channel 0: mean(10, 11, 14, 15) / 10 = 1.25
    k2 = pcam(x)
    assert torch.allclose(k2, torch.full((1, 2, 1, 1), torch.sigmoid(torch.tensor(1.25)).item()))


def test_pcam_zero_first_layer_gives_sigmoid_of_second_bias():
    pcam = PyramidChannelAttention(num_feat=2)
    with torch.no_grad():
        pcam.fc[0].weight.zero_()
        pcam.fc[0].bias.zero_()  # hidden = relu(0) = 0
        pcam.fc[2].bias.copy_(torch.tensor([0., math.log(3)]))
    k2 = pcam(torch.randn(3, 2, 4, 4))
    expected = torch.tensor([0.5, 0.75]).view(1, 2, 1, 1).expand(3, 2, 1, 1)
    assert torch.allclose(k2, expected)


def test_pcam_matches_equations_with_random_weights():
    torch.manual_seed(0)
    b, c = 2, 8
    pcam = PyramidChannelAttention(num_feat=c, reduction=2)
    x = torch.randn(b, c, 8, 8)
    # average pooling to s x s on an 8x8 input = mean over (8 / s) x (8 / s) tiles
    squeezed = torch.cat([x.reshape(b, c, s, 8 // s, s, 8 // s).mean(dim=(3, 5)).flatten(1) for s in (1, 2, 4)], 1)
    assert squeezed.shape == (b, 21 * c)
    w1, b1, w2, b2 = pcam.fc[0].weight, pcam.fc[0].bias, pcam.fc[2].weight, pcam.fc[2].bias
    expected = torch.sigmoid(torch.relu(squeezed @ w1.T + b1) @ w2.T + b2).view(b, c, 1, 1)
    k2 = pcam(x)
    assert k2.shape == (b, c, 1, 1)
    assert ((k2 > 0) & (k2 < 1)).all()
    assert torch.allclose(k2, expected, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# DPAM
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('attention', ['none', 'sam', 'pcam', 'dpam'])
def test_dpam_combines_branches(attention):
    torch.manual_seed(0)
    dpam = DualParallelAttention(8, attention=attention, pcam_reduction=2)
    x = torch.randn(2, 8, 6, 5)
    assert (dpam.sam is not None) == (attention in ('sam', 'dpam'))
    assert (dpam.pcam is not None) == (attention in ('pcam', 'dpam'))
    with torch.no_grad():
        out = dpam(x)
        expected = x.clone()
        if attention in ('sam', 'dpam'):
            expected += dpam.sam(x) * x  # A1 = k1 * F
        if attention in ('pcam', 'dpam'):
            expected += dpam.pcam(x) * x  # A2 = k2 * F
    assert out.shape == x.shape
    assert torch.allclose(out, expected, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# Gradients, registry
# --------------------------------------------------------------------------------------------------------------------
def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    # pcam_reduction=2 gives PCAM 8 hidden ReLU units: with only 1-4 a few seeds leave them all dead (zero grads)
    model = MRDABNet(num_feat=16, num_block=2, num_groups=2, growth=4, connection='dense', attention='dpam',
                     pcam_reduction=2, upscale=2)
    out = model(torch.rand(2, 3, 12, 12))
    out.pow(2).mean().backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_registered_and_buildable():
    assert ARCH_REGISTRY.get('MRDABNet') is MRDABNet
    model = build_network(dict(type='MRDABNet', num_in_ch=1, num_out_ch=1, upscale=3, **TINY))
    assert isinstance(model, MRDABNet)
    assert model.upscale == 3
    with torch.no_grad():
        assert model(torch.rand(1, 1, 5, 7)).shape == (1, 1, 15, 21)


def test_global_skip_starts_as_bicubic_and_learns_the_residual():
    torch.manual_seed(0)
    net = MRDABNet(1, 1, num_feat=8, num_block=1, num_groups=1, growth=4, upscale=2, global_skip='bicubic')
    x = torch.rand(2, 1, 12, 10)
    bicubic = F.interpolate(x, scale_factor=2, mode='bicubic', align_corners=False)
    assert torch.equal(net(x), bicubic)
    with torch.no_grad():
        net.conv_last.bias.fill_(0.25)
    assert torch.allclose(net(x), bicubic + 0.25, atol=1e-6)
    assert torch.allclose(net.reparameterized('merge')(x), bicubic + 0.25, atol=1e-5)
    plain = MRDABNet(1, 1, num_feat=8, num_block=1, num_groups=1, growth=4, upscale=2)
    assert not torch.allclose(plain(x), bicubic, atol=1e-3)  # the paper's network has no such path


def test_upscale_1_keeps_the_size_and_its_skip_is_the_input():
    """Through-plane networks run on inputs already interpolated to the output grid (mrsr_plugin.apps.through_plane)."""
    net = MRDABNet(1, 1, num_feat=8, num_block=1, num_groups=1, growth=4, upscale=1, global_skip='bicubic')
    x = torch.rand(2, 1, 9, 14)
    assert not any(isinstance(m, torch.nn.PixelShuffle) for m in net.modules())
    assert torch.equal(net(x), x)  # starts as the identity on its (interpolated) input
    plain = MRDABNet(1, 1, num_feat=8, num_block=1, num_groups=1, growth=4, upscale=1)
    assert plain(x).shape == x.shape


@pytest.mark.parametrize('kwargs, message', [
    ({'global_skip': 'bilinear'}, 'global_skip must be one of'),
    ({'global_skip': 'bicubic', 'num_in_ch': 3, 'num_out_ch': 1}, 'needs num_in_ch == num_out_ch'),
])
def test_global_skip_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MRDABNet(**kwargs)
