"""ICNR initialisation of sub-pixel convolutions and the EMA warm-up of the plugin's models."""
import pytest
import torch
from basicsr.archs.edsr_arch import EDSR
from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.models import build_model
from conftest import tiny_options
from torch import nn
from torch.nn import functional as F

from mrsr_plugin.archs.arch_util import icnr_, icnr_init_subpixel_convs
from mrsr_plugin.archs.mrdab_arch import MRDABNet
from mrsr_plugin.models.training_mixin import TrainingMixin

NETWORKS = {
    'MRDABNet': lambda s: MRDABNet(1, 1, num_feat=8, num_block=1, num_groups=1, growth=4, upscale=s),
    'EDSR': lambda s: EDSR(3, 3, num_feat=8, num_block=1, upscale=s),
    'MSRResNet': lambda s: MSRResNet(1, 1, num_feat=8, num_block=1, upscale=s),
}


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('name', list(NETWORKS))
def test_icnr_makes_every_subpixel_stage_nearest_neighbour(name, scale):
    torch.manual_seed(0)
    net = NETWORKS[name](scale)
    convs = icnr_init_subpixel_convs(net)
    assert len(convs) == (2 if scale == 4 else 1)
    for conv in convs:
        r = 2 if scale == 4 else scale
        x = torch.randn(1, conv.in_channels, 5, 6)
        y = F.pixel_shuffle(conv(x), r)
        assert torch.allclose(y, F.interpolate(y[..., ::r, ::r], scale_factor=r, mode='nearest'), atol=1e-6)
    again = {k: v.clone() for k, v in net.state_dict().items()}
    icnr_init_subpixel_convs(net)  # a second call changes nothing
    assert all(torch.equal(again[k], v) for k, v in net.state_dict().items())


def test_untouched_networks_are_checkerboards_without_icnr():
    """The property above does not hold for PyTorch's default initialisation (the test can fail)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 32, 3, padding=1)
    y = F.pixel_shuffle(conv(torch.randn(1, 8, 5, 5)), 2)
    assert not torch.allclose(y, F.interpolate(y[..., ::2, ::2], scale_factor=2, mode='nearest'), atol=1e-3)
    icnr_(conv, 2)
    y = F.pixel_shuffle(conv(torch.randn(1, 8, 5, 5)), 2)
    assert torch.allclose(y, F.interpolate(y[..., ::2, ::2], scale_factor=2, mode='nearest'), atol=1e-6)


def test_mrdabnet_starts_with_icnr_and_networks_without_pixel_shuffle_are_left_alone():
    net = NETWORKS['MRDABNet'](2)
    weight = net.upsample[0].weight
    assert torch.equal(weight[0::4], weight[1::4]) and torch.equal(weight[0::4], weight[3::4])
    assert icnr_init_subpixel_convs(nn.Sequential(nn.Conv2d(1, 4, 3))) == []
    with pytest.raises(ValueError, match='not a multiple of 4'):
        icnr_(nn.Conv2d(1, 6, 3), 2)


def _model(tmp_path, network_g=None, ema=0.999, **train):
    opt = tiny_options(tmp_path, 'mixin', model_type='MRSRModel')
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    opt['train'].update(ema_decay=ema, **train)
    if network_g:
        opt['network_g'] = network_g
    torch.manual_seed(0)
    return build_model(opt)


def test_the_plugins_models_apply_icnr_to_basicsrs_networks(tmp_path):
    edsr = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 2}
    weight = _model(tmp_path, edsr).net_g.upsample[0].weight
    assert torch.equal(weight[0::4], weight[2::4])
    weight = _model(tmp_path, edsr, icnr_init=False).net_g.upsample[0].weight
    assert not torch.equal(weight[0::4], weight[2::4])


def _train(model, iters, start=1):
    gen = torch.Generator().manual_seed(1)
    for current_iter in range(start, start + iters):
        gt = torch.rand(2, 3, 32, 32, generator=gen)
        model.feed_data({'lq': F.avg_pool2d(gt, 2), 'gt': gt})
        model.optimize_parameters(current_iter)


def _distance(net, other):
    return sum(float((a - b).detach().pow(2).sum()) for a, b in zip(net.parameters(), other.parameters())) ** 0.5


def test_warmed_up_ema_follows_a_short_run(tmp_path):
    """30 iterations << 1 / (1 - 0.999): the warmed-up EMA is near the trained network, BasicSR's near the start."""
    for warmup in (True, False):
        model = _model(tmp_path, ema_warmup=warmup)
        initial = [p.detach().clone() for p in model.net_g.parameters()]
        _train(model, 30)
        trained = dict(model.net_g.named_parameters())
        to_trained = _distance(model.net_g_ema, model.net_g)
        moved = sum(float((p.detach() - i).pow(2).sum()) for p, i in zip(trained.values(), initial)) ** 0.5
        if warmup:
            assert to_trained < 0.4 * moved
        else:  # 1 - 0.999 ** 30 = 3% of the way
            assert to_trained > 0.9 * moved


def test_ema_decay_schedule_reaches_basicsrs_and_depends_only_on_the_iteration(tmp_path):
    model = _model(tmp_path)
    assert model.ema_decay_at(1) == pytest.approx(0.1)
    assert model.ema_decay_at(11) == pytest.approx(11 / 20)
    assert model.ema_decay_at(8992) == 0.999 and model.ema_decay_at(10**6) == 0.999
    assert all(model.ema_decay_at(t) < model.ema_decay_at(t + 1) for t in range(1, 8991))
    assert _model(tmp_path, ema_warmup=False).ema_decay_at(1) == 0.999
    assert TrainingMixin.ema_decay_at.__doc__  # the schedule is documented where it is made


def test_late_ema_updates_are_basicsrs_and_a_resumed_run_continues_the_schedule(tmp_path):
    """One update at iteration 10000 equals BasicSR's ``model_ema(0.999)``; a model built afresh and fed iterations
    6..10 (as after a resume at 5) makes the same EMA as one that ran 1..10."""
    model = _model(tmp_path)
    _train(model, 3)
    ema_before = {k: v.clone() for k, v in model.net_g_ema.state_dict().items()}
    _train(model, 1, start=10000)
    plugin = {k: v.clone() for k, v in model.net_g_ema.state_dict().items()}
    model.net_g_ema.load_state_dict(ema_before)
    model.model_ema(decay=0.999)
    assert all(torch.equal(plugin[k], v) for k, v in model.net_g_ema.state_dict().items())

    whole = _model(tmp_path)
    _train(whole, 10)
    first = _model(tmp_path)
    _train(first, 5)
    resumed = _model(tmp_path)
    for name in ('net_g', 'net_g_ema'):
        getattr(resumed, name).load_state_dict(getattr(first, name).state_dict())
    resumed.optimizer_g.load_state_dict(first.optimizer_g.state_dict())
    gen = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(10):
        gt = torch.rand(2, 3, 32, 32, generator=gen)
        batches.append({'lq': F.avg_pool2d(gt, 2), 'gt': gt})
    for current_iter in range(6, 11):
        resumed.feed_data(batches[current_iter - 1])
        resumed.optimize_parameters(current_iter)
    assert _distance(resumed.net_g_ema, whole.net_g_ema) < 1e-5
