"""Generator checkpoints that describe themselves: the one place that reads and writes them.

A generator checkpoint is BasicSR's dict of state dicts, ``params`` and / or ``params_ema``. Those the plugin writes
(the periodic saves of its models, :class:`mrsr_plugin.models.checkpoint_mixin.CheckpointMixin`, and
the shipped files of ``mrsr_plugin/checkpoints/``) also carry ``mrsr``, what is needed to use the weights, in plain
data only (str, int, float, bool, list, dict, None) so that ``torch.load(weights_only=True)`` reads it::

    mrsr:
      format: 1
      network_g: {type: MRDABNet, num_in_ch: 1, num_out_ch: 1, num_feat: 32, ..., upscale: 2}  # the option file's
      scale: 2                          # the network's upscale (1 for a through-plane model)
      channels: {in: 1, out: 1}
      normalization: {method: percentile, percentiles: [0.5, 99.5]}  # of the training data; null: not known
      degradation: {downsample: bicubic, ...}   # in-plane: how the LR was made (DegradationConfig); null: not known
      slice_profile: null               # through-plane: the ThroughPlaneConfig trained for, with
      through_plane_scale: null         # its scale s (z s); both null in-plane
      option_file: demo_mrdab_x2.yml
      name: demo_MRDAB_GAN_x2
      iteration: 1000
      plugin_version: 0.1.0

The normalisation and the in-plane degradation of LMDB data are those ``mrsr-prepare`` recorded in the prepared
folder's ``report.json`` (``parameters``), found from the training set's ``dataroot_gt``
(``<prepared>/<split>/HR.lmdb``); a dataset that makes LR on the fly records its own ``degradation:``.
Checkpoints without the block (older ones, BasicSR's own) load as before with the network given separately.
"""
import inspect
import json
import os
import pickle

import torch

from mrsr_plugin.errors import MRSRUserError
from mrsr_plugin.fsutil import staged_saves
from mrsr_plugin.version import __version__

KEY = 'mrsr'
FORMAT = 1
REPORT_NAME = 'report.json'  # mrsr-prepare's record of a prepared folder


# --- reading ---------------------------------------------------------------------------------------------------------


def load_checkpoint(path, map_location='cpu', allowed=()):
    """``torch.load(path, weights_only=True)`` whatever torch's default or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``.

    Args:
        path (str): A .pth checkpoint or .state training state.
        map_location: As torch.load's. Default: 'cpu'.
        allowed (sequence): Classes the file may hold besides tensors and plain containers (e.g.
            ``collections.Counter`` in BasicSR's training states).

    Raises:
        MRSRUserError: One line naming the file: missing, refused by weights_only (a pickle payload, or objects
            other than ``allowed``) or unreadable (truncated, not a torch file).
    """
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as err:
        raise MRSRUserError(f'{path}: no such file') from err
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = next((line for line in lines if 'GLOBAL' in line or 'global' in line), lines[-1] if lines else '')
        raise MRSRUserError(f'{path}: refused by weights_only loading, which runs no code from the file: '
                            f'{detail.rstrip(".")}') from err
    except Exception as err:  # torch.load raises many kinds of errors on corrupt or foreign files
        reason = (str(err).strip().splitlines() or [''])[0].split('. ')[0]
        raise MRSRUserError(f'{path}: cannot load ({type(err).__name__}: {reason})') from err


def state_dict(checkpoint, path, param_key=None):
    """The weights of a loaded checkpoint, the ``module.`` prefix of DDP checkpoints dropped.

    Args:
        checkpoint (dict): What :func:`load_checkpoint` returned.
        path (str): Its file, for messages.
        param_key (str | None): ``params_ema`` falls back to ``params`` (as BasicSR's ``load_network``); None:
            ``params_ema`` if present, else ``params``, else the file itself when it is a bare state dict.

    Returns:
        tuple[dict, str | None]: The state dict and the key it was under (None: a bare state dict).
    """
    if not isinstance(checkpoint, dict):
        raise MRSRUserError(f'{path}: not a BasicSR checkpoint (a {type(checkpoint).__name__}, not a dict)')
    candidates = [param_key] + ['params'] * (param_key == 'params_ema') if param_key else ['params_ema', 'params']
    key = next((k for k in candidates if isinstance(checkpoint.get(k), dict)), None)
    if key is None and param_key is None and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state = checkpoint
    elif key is None:
        raise MRSRUserError(f'{path}: no weights under {param_key or "params_ema or params"} '
                            f'(keys: {", ".join(map(str, list(checkpoint)[:5]))})')
    else:
        state = checkpoint[key]
    return {k.removeprefix('module.'): v for k, v in state.items()}, key


def info_of(checkpoint, path):
    """The ``mrsr`` block of a loaded checkpoint (module docstring), or None for one without; MRSRUserError naming
    the file when the block is there but unusable."""
    info = checkpoint.get(KEY) if isinstance(checkpoint, dict) else None
    if info is None:
        return None
    network_g = info.get('network_g') if isinstance(info, dict) else None
    if not isinstance(network_g, dict) or 'type' not in network_g or not isinstance(info.get('scale'), int):
        raise MRSRUserError(f'{path}: its {KEY} block lacks network_g (with a type) or an integer scale')
    return info


def read(path, param_key=None):
    """Checkpoint file -> (state dict, ``mrsr`` block or None); see :func:`state_dict` for ``param_key``."""
    checkpoint = load_checkpoint(path)
    return state_dict(checkpoint, path, param_key)[0], info_of(checkpoint, path)


def missing(path, what, remedy):
    """One line for a checkpoint without a block that would have said ``what``."""
    return (f'{path}: no {KEY} block (written before checkpoints described themselves, or by BasicSR itself), so '
            f'its {what} is missing; pass {remedy}')


def window_text(normalization):
    """'percentile 0.5 99.5', 'minmax' or 'not recorded' of a block's ``normalization``."""
    if not normalization:
        return 'not recorded'
    return ' '.join([normalization['method'], *(f'{p:g}' for p in normalization.get('percentiles') or [])])


def summary(info):
    """'x2, 1 channel(s), MRDABNet' (in-plane) or 'through-plane z2, 1 channel(s), MRDABNet' of a block."""
    task = f'through-plane z{info["through_plane_scale"]}' if info.get('slice_profile') else f'x{info["scale"]}'
    channels = info.get('channels') or {}
    return f'{task}, {channels.get("in", "?")} channel(s), {info["network_g"]["type"]}'


# --- writing ---------------------------------------------------------------------------------------------------------


def plain(value):
    """``value`` as the plain data weights_only reads: tuples become lists, numpy scalars Python numbers, anything
    else that is not str / int / float / bool / None / list / dict its ``str``."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return value.item() if hasattr(value, 'item') else str(value)


def save(path, params, info):
    """Write a generator checkpoint ``{**params, 'mrsr': info}`` atomically: into a hidden staging folder beside
    ``path`` (``.saving-*``, as :mod:`mrsr_plugin.compat` stages BasicSR's saves), then renamed over it, so a
    failed or killed save never leaves a file that looks complete.

    Args:
        path (str): The .pth file.
        params (dict[str, dict]): ``{'params': state dict, 'params_ema': state dict}`` (either or both); tensors go
            to the CPU and lose a ``module.`` prefix, as in BasicSR's ``save_network``.
        info (dict | None): The ``mrsr`` block (:func:`training_info`); None writes BasicSR's format alone.
    """
    checkpoint = {key: {k.removeprefix('module.'): v.detach().cpu() for k, v in state.items()}
                  for key, state in params.items()}
    if info is not None:
        checkpoint[KEY] = plain(info)
    name = os.path.basename(path)
    with staged_saves(os.path.dirname(os.path.abspath(path))) as (staging, moved):
        torch.save(checkpoint, os.path.join(staging, name))
    if name not in moved:
        raise OSError(f'{path}: the saved checkpoint is incomplete')


def prepared_parameters(folder):
    """``parameters`` of ``folder/report.json`` as ``mrsr-prepare`` wrote it, or None where there is none."""
    try:
        with open(os.path.join(folder, REPORT_NAME)) as f:
            parameters = json.load(f).get('parameters')
    except (OSError, ValueError, AttributeError):
        return None
    return parameters if isinstance(parameters, dict) and 'normalize' in parameters else None


def normalization_of(parameters):
    """``{'method', 'percentiles'}`` (percentiles for method percentile only) of mrsr-prepare's parameters, or
    None."""
    if not parameters:
        return None
    method = parameters['normalize']
    return {'method': method, 'percentiles': plain(parameters.get('percentiles')) if method == 'percentile' else None}


def network_channels(net, network_g):
    """(in, out) channels: network_g's ``num_in_ch`` / ``num_out_ch``, else the defaults of ``net``'s class, else
    None."""
    defaults = inspect.signature(type(net)).parameters
    return tuple(network_g.get(key, defaults[key].default if key in defaults else None)
                 for key in ('num_in_ch', 'num_out_ch'))


def training_info(opt, net, iteration=None, option_file=None, slice_profile=None, data_parameters=None):
    """The ``mrsr`` block of a generator trained with the BasicSR option dict ``opt``.

    Args:
        opt (dict): The option dict (``network_g``, ``scale``, ``name``, ``datasets.train``).
        net (nn.Module): The bare generator (for channel defaults that network_g leaves out).
        iteration (int | None): The iteration saved (None where unknown).
        option_file (str | None): The option file; its name is kept.
        slice_profile (ThroughPlaneConfig | None): Through-plane: the training dataset's slice profile.
        data_parameters (dict | None): mrsr-prepare's ``parameters`` of the training data; default: read from the
            ``report.json`` of the folder that holds the training set's ``dataroot_gt`` folder, if any.
    """
    train = (opt.get('datasets') or {}).get('train') or {}
    if data_parameters is None and train.get('dataroot_gt'):
        data_parameters = prepared_parameters(os.path.dirname(os.path.dirname(os.path.abspath(train['dataroot_gt']))))
    channels = network_channels(net, opt['network_g'])
    if slice_profile is not None:
        degradation = None
    else:
        degradation = train.get('degradation') or (data_parameters or {}).get('degradation')
    return plain({
        'format': FORMAT,
        'network_g': opt['network_g'],  # plain() copies it
        'scale': opt['scale'],
        'channels': {'in': channels[0], 'out': channels[1]},
        'normalization': normalization_of(data_parameters),
        'degradation': degradation,
        'slice_profile': None if slice_profile is None else vars(slice_profile),
        'through_plane_scale': None if slice_profile is None else slice_profile.scale,
        'option_file': os.path.basename(option_file) if option_file else None,
        'name': opt.get('name'),
        'iteration': iteration,
        'plugin_version': __version__,
    })


# --- using -----------------------------------------------------------------------------------------------------------


def choose(what, given, stored, default, path):
    """One setting: an explicit ``given`` value wins, else the checkpoint's ``stored`` one, else ``default``.

    Returns:
        tuple: (the value, a one-line warning when ``given`` contradicts ``stored``, else None).
    """
    if given is None:
        return (default if stored is None else stored), None
    if stored is not None and given != stored:
        return given, f'warning: {what} {_shown(given)} contradicts {path}, trained with {_shown(stored)}; using {what}'
    return given, None


def _shown(value):
    return ' '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in value) if isinstance(value, list) else value


def data_mismatch(info, weights, folder):
    """One-line warnings (a list) where the prepared ``folder`` was normalised otherwise than the training data of
    the checkpoint whose ``mrsr`` block is ``info``, both as mrsr-prepare recorded them."""
    trained, prepared = info.get('normalization'), normalization_of(prepared_parameters(folder))
    if trained and prepared and trained != prepared:
        return [f'warning: {folder} was normalised with {window_text(prepared)}, {weights} was trained on data '
                f'normalised with {window_text(trained)}: it sees intensities it was not trained on']
    return []
