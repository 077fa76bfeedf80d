"""Fast paths (mrsr_plugin/speed.py, models/fast_path.py, MRDABNet.reparameterized): each against the plain model.

Tolerances, on outputs of magnitude about 1 (random non-zero biases make every branch matter):
- exact in fp32 (channels_last, fold, merge, torch.compile): max abs difference 1e-4 (observed up to about 2e-5 on
  the paper-size network, from the different summation order);
- bf16 autocast: 5e-2 of the output range (8-bit mantissa), fp16 autocast: 5e-3 (11-bit mantissa); in training the
  losses within those relative tolerances and the parameter updates in the direction of fp32's.
"""
import copy
import resource
import sys

import pytest
import torch
from basicsr.models import build_model
from conftest import SCALE, run_python, tiny_options

from mrsr_plugin.archs.mrdab_arch import MRDABNet
from mrsr_plugin.speed import SpeedOptionError, SpeedOptions, evaluation_network

EXACT = 1e-4
AMP_TOLERANCE = {'bf16': 5e-2, 'fp16': 5e-3}
AMP_UPDATE_COSINE = {'bf16': 0.98, 'fp16': 0.995}  # training: cosine of the AMP and fp32 parameter updates
TINY = dict(num_feat=8, num_block=2, num_groups=2, growth=4, upscale=2)


def _random_biases(net):
    torch.manual_seed(1)
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d) and module.bias is not None:
            torch.nn.init.normal_(module.bias, 0, 0.1)
    return net


def _tiny(**kwargs):
    torch.manual_seed(0)
    return _random_biases(MRDABNet(**dict(TINY, **kwargs))).eval()


def _outputs(net, x):
    with torch.no_grad():
        return net(x)


# --------------------------------------------------------------------------------------------------------------------
# re-parameterisation
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('mode', ['fold', 'merge'])
@pytest.mark.parametrize('kernel_sizes, connection, attention', [
    ([3, 5, 7], 'dense', 'dpam'),
    ([3, 5, 7], 'residual', 'dpam'),
    ([1, 3, 5], 'dense', 'sam'),
    ([3, 5], 'dense', 'pcam'),
    ([3], 'residual', 'none'),
])
def test_reparameterized_equals_plain(mode, kernel_sizes, connection, attention):
    net = _tiny(kernel_sizes=kernel_sizes, connection=connection, attention=attention)
    x = torch.rand(2, 3, 12, 10)
    plain = _outputs(net, x)
    fast = net.reparameterized(mode)
    assert (_outputs(fast, x) - plain).abs().max() < EXACT
    assert plain.abs().max() > 0.1
    assert torch.equal(_outputs(net, x), plain)  # the original is untouched


def test_reparameterized_structure():
    net = _tiny()
    merged = net.reparameterized('merge')
    block = merged.blocks[0]
    assert [conv.kernel_size for conv in block.dpam.sam.convs] == [(7, 7)]
    for group in block.msrdb.groups:
        assert len(group.convs) == 1 and group.convs[0].kernel_size == (7, 7) and group.convs[0].out_channels == 12
    assert block.msrdb.residual_folded
    folded = net.reparameterized('fold')
    assert all(len(group.convs) == 3 for group in folded.blocks[0].msrdb.groups)
    assert not net.blocks[0].msrdb.residual_folded and len(net.blocks[0].dpam.sam.convs) == 3


def test_folded_weights_never_load_into_the_plain_layout_or_back():
    net = _tiny(attention='none')  # no SAM: the folded residual is the only difference
    folded = net.reparameterized('fold')
    with pytest.raises(RuntimeError, match='folded_residual'):
        copy.deepcopy(net).load_state_dict(folded.state_dict())
    with pytest.raises(RuntimeError, match='folded_residual'):
        folded.load_state_dict(net.state_dict())


def test_unknown_reparameterization_is_refused():
    with pytest.raises(ValueError, match='reparameterize must be one of'):
        _tiny().reparameterized('fuse')


# --------------------------------------------------------------------------------------------------------------------
# channels_last, AMP, torch.compile through evaluation_network (used by the models and the inference command)
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('speed', [
    dict(channels_last=True, reparameterize='none'),
    dict(channels_last=True, reparameterize='merge'),
    dict(channels_last=False, reparameterize='fold'),
])
def test_evaluation_network_is_exact_in_fp32(speed):
    net = _tiny()
    x = torch.rand(1, 3, 16, 16)
    options = SpeedOptions(**speed)
    fast = evaluation_network(net, options, torch.device('cpu'))
    assert fast is not net and not fast.training
    assert fast.conv_first[0].weight.is_contiguous(memory_format=options.memory_format)
    with torch.no_grad():
        y = fast(x.contiguous(memory_format=options.memory_format))
    assert (y - _outputs(net, x)).abs().max() < EXACT


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_amp_inference_within_its_precision(amp):
    net = _tiny()
    x = torch.rand(1, 3, 16, 16)
    plain = _outputs(net, x)
    options = SpeedOptions(amp=amp)
    with torch.no_grad(), options.autocast('cpu'):
        y = evaluation_network(net, options, torch.device('cpu'))(x)
    assert y.dtype == {'bf16': torch.bfloat16, 'fp16': torch.float16}[amp]
    error = (y.float() - plain).abs().max() / (plain.max() - plain.min())
    assert 0 < error < AMP_TOLERANCE[amp]


def test_compiled_evaluation_network_is_exact(monkeypatch):
    net = _tiny(num_block=1, num_groups=1)
    x = torch.rand(1, 3, 8, 8)
    fast = evaluation_network(net, SpeedOptions(compile=True), torch.device('cpu'))
    assert fast._compiled_call_impl is not None and net._compiled_call_impl is None
    with torch.no_grad():
        y = fast(x.contiguous(memory_format=torch.channels_last))
    assert (y - _outputs(net, x)).abs().max() < EXACT


@pytest.mark.parametrize('block, message', [
    ({'amp': 'fp8'}, 'speed.amp must be ~ (off), bf16 or fp16'),
    ({'channels_last': 'yes'}, 'speed.channels_last must be true or false'),
    ({'reparameterize': 'fuse'}, 'speed.reparameterize must be one of none, fold, merge'),
    ({'amp_dtype': 'bf16'}, 'unknown option(s) amp_dtype'),
    (['amp'], 'speed must be a mapping'),
])
def test_bad_speed_options_are_named(block, message):
    with pytest.raises(SpeedOptionError) as info:
        SpeedOptions.from_opt(block)
    assert message in str(info.value)


# --------------------------------------------------------------------------------------------------------------------
# training: the models' optimize_parameters against BasicSR's, and under AMP / channels_last / compile
# --------------------------------------------------------------------------------------------------------------------
def _batch():
    rng = torch.Generator().manual_seed(3)
    gt = torch.rand(2, 3, 32, 32, generator=rng)
    return {'lq': torch.nn.functional.avg_pool2d(gt, SCALE), 'gt': gt}


def _trained(tmp_path, model_type, speed=None, iters=2, ema=0, forward_dtypes=None):
    opt = tiny_options(tmp_path, 'fast', model_type='SRGANModel' if 'GAN' in model_type else 'SRModel')
    opt.update(model_type=model_type, is_train=True, dist=False, rank=0, world_size=1)
    opt['train'].update(ema_decay=ema)
    if 'network_d' in opt:
        opt['train'].update(gan_opt={'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 0.1},
                            optim_d={'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]}, net_d_iters=1,
                            net_d_init_iters=0)
    if speed is not None:
        opt['speed'] = speed
    torch.manual_seed(0)
    model = build_model(opt)
    if forward_dtypes is not None:  # records the dtype of net_g's first convolution output in each forward
        conv = model.get_bare_model(model.net_g).conv_first[0]
        conv.register_forward_hook(lambda module, inputs, output: forward_dtypes.append(output.dtype))
    logs = []
    for current_iter in range(1, iters + 1):
        model.feed_data(_batch())
        model.optimize_parameters(current_iter)
        logs.append({k: float(v) for k, v in model.log_dict.items()})
    nets = [model.net_g] + ([model.net_d] if hasattr(model, 'net_d') else [])
    return model, logs, [dict(model.get_bare_model(net).state_dict()) for net in nets]


@pytest.mark.parametrize('plugin, basicsr', [('MRSRGANModel', 'SRGANModel'), ('MRSRModel', 'SRModel')])
def test_plain_training_step_is_basicsrs_bit_for_bit(tmp_path, plugin, basicsr):
    """Guards the re-implemented optimize_parameters: without fast paths it must be BasicSR's arithmetic."""
    _, logs, states = _trained(tmp_path, plugin, {'channels_last': False})
    _, ref_logs, ref_states = _trained(tmp_path, basicsr)
    assert logs == ref_logs
    for state, ref in zip(states, ref_states):
        assert state.keys() == ref.keys()
        assert all(torch.equal(state[k], ref[k]) for k in ref)


def _close_states(states, ref_states, tolerance):
    for state, ref in zip(states, ref_states):
        for key, value in ref.items():
            if value.is_floating_point():
                assert (state[key] - value).abs().max() <= tolerance, key


def test_channels_last_training_matches_plain(tmp_path):
    model, logs, states = _trained(tmp_path, 'MRSRGANModel')  # channels_last is the default
    assert model.lq.is_contiguous(memory_format=torch.channels_last)
    assert model.get_bare_model(model.net_g).conv_first[0].weight.is_contiguous(memory_format=torch.channels_last)
    _, ref_logs, ref_states = _trained(tmp_path, 'MRSRGANModel', {'channels_last': False})
    for log, ref in zip(logs, ref_logs):
        assert log == pytest.approx(ref, abs=EXACT)
    # Adam moves each weight by about lr = 1e-3 per step: differences far below that are rounding
    _close_states(states, ref_states, 1e-5)


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_amp_training_follows_fp32(tmp_path, amp):
    dtypes = []
    model, logs, states = _trained(tmp_path, 'MRSRGANModel', {'amp': amp}, iters=3, forward_dtypes=dtypes)
    assert dtypes == [{'bf16': torch.bfloat16, 'fp16': torch.float16}[amp]] * 3
    _, ref_logs, ref_states = _trained(tmp_path, 'MRSRGANModel', iters=3)
    assert model.grad_scaler.is_enabled() == (amp == 'fp16')
    if amp == 'fp16':
        assert model.grad_scaler.get_scale() == 2.0**16  # no step was skipped for an overflow
    for log, ref in zip(logs, ref_logs):
        for key in ('l_g_pix', 'l_g_gan', 'l_d_real', 'l_d_fake'):
            assert log[key] == pytest.approx(ref[key], rel=AMP_TOLERANCE[amp]), key
    # Adam steps have a size of about lr whatever the gradient's scale, so compare the directions of the updates
    initial = _trained(tmp_path, 'MRSRGANModel', iters=0)[2]
    for state, ref, init in zip(states, ref_states, initial):
        update, ref_update = (torch.cat([(s[k] - v).flatten() for k, v in init.items() if v.is_floating_point()])
                              for s in (state, ref))
        assert ref_update.abs().max() > 1e-3  # the steps happened
        cosine = torch.nn.functional.cosine_similarity(update, ref_update, dim=0)
        assert cosine > AMP_UPDATE_COSINE[amp]


def test_compiled_training_matches_eager(tmp_path):
    model, logs, states = _trained(tmp_path, 'MRSRModel', {'compile': True})
    assert model.get_bare_model(model.net_g)._compiled_call_impl is not None
    assert not any(k.startswith('_orig_mod') for k in states[0])  # checkpoints keep the bare network's keys
    _, ref_logs, ref_states = _trained(tmp_path, 'MRSRModel')
    for log, ref in zip(logs, ref_logs):
        assert log == pytest.approx(ref, abs=EXACT)
    _close_states(states, ref_states, 1e-5)


@pytest.mark.parametrize('speed', [None, {'reparameterize': 'merge', 'amp': 'bf16'}])
def test_model_test_uses_a_fresh_evaluation_copy(tmp_path, speed):
    model, _, _ = _trained(tmp_path, 'MRSRGANModel', speed, ema=0.5)
    batch = _batch()
    model.feed_data(batch)
    model.test()
    with torch.no_grad():
        expected = model.net_g_ema.eval()(batch['lq'])
    tolerance = AMP_TOLERANCE['bf16'] if speed else EXACT
    assert model.output.dtype == torch.float32 and model.output.is_contiguous()
    assert (model.output - expected).abs().max() <= tolerance * (expected.max() - expected.min())
    assert model.eval_net is not model.net_g_ema and model.net_g.training


def test_inference_forward_shares_concatenation_buffers_and_equals_the_autograd_forward(monkeypatch):
    from mrsr_plugin.archs import mrdab_arch
    calls = []  # (workspace, output) of each concatenation
    original = mrdab_arch.ConcatWorkspace.cat

    def recording_cat(self, index, parts):
        out = original(self, index, parts)
        calls.append((self, out))
        return out

    monkeypatch.setattr(mrdab_arch.ConcatWorkspace, 'cat', recording_cat)
    net = _tiny(num_groups=3).to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 12, 10).contiguous(memory_format=torch.channels_last)
    with torch.enable_grad():
        fresh = net(x).detach()
    assert calls == []
    with torch.no_grad():
        shared = net(x)
    assert torch.equal(shared, fresh)
    assert len(calls) == TINY['num_block'] * 3
    workspace = calls[0][0]
    assert all(w is workspace for w, _ in calls) and len(workspace.buffers) == 2  # ping-pong
    outputs = [out for _, out in calls]
    assert all(out.is_contiguous(memory_format=torch.channels_last) for out in outputs)
    pointers = [out.data_ptr() for out in outputs]
    # buffer 0 grows from G_1 to G_3 in the first block, then both buffers serve the second block as they are
    assert pointers[2] == pointers[3] == pointers[5] != pointers[1] == pointers[4]


FAULTS = """
import resource, sys, torch
from mrsr_plugin.speed import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == 'keep' else False
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
before = faults()
for _ in range(20):  # two large tensors of a forward, filled and freed: 64 + 32 MiB
    a = torch.empty(2**24).fill_(1)
    b = torch.empty(2**23).fill_(2)
    del a, b
print(applied, (faults() - before) // 20)
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc tuning')
def test_keep_freed_memory_reuses_large_blocks_instead_of_page_faulting(tmp_path):
    """Measured: about 24,600 minor page faults per iteration by default (every page of 96 MiB afresh), 1,150-3,700
    with keep_freed_memory."""
    results = {}
    for mode in ('default', 'keep'):
        proc = run_python(['-c', FAULTS, mode], cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout
        applied, faults = proc.stdout.split()[-2:]
        results[mode] = (applied == 'True', int(faults))
    pages = 3 * 2**25 // resource.getpagesize()
    assert results['default'] == (False, results['default'][1]) and results['default'][1] > pages // 2
    assert results['keep'] == (True, results['keep'][1]) and results['keep'][1] < pages // 3
