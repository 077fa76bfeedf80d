"""A trained generator against bicubic interpolation on a prepared split, per patient, and a Fig. 7-style panel.

    python scripts/evaluate.py -w experiments/demo_MRDAB_GAN_x2/models/net_g_latest.pth \\
        --data datasets/prostate3t_prepared --split test --panel experiments/demo_MRDAB_GAN_x2/fig7_test.png
    python scripts/evaluate.py -w mrdab_x2_prostate3t_demo --data datasets/prostate3t_prepared   # a shipped generator

The split is read from ``scripts/lmdb_prepare.py``'s output with ``ProstateMRPairedDataset`` (several splits
pooled); a slice's patient is its key's case (``case0004_00_s009`` -> ``case0004``). Every slice is scored against HR
as float32 in [0, 1] (``data_range`` 1, ``crop_border`` = scale) by the registered metrics of :data:`METRICS`, with
``*_fg`` versions on HR's foreground (:data:`FOREGROUND_THRESHOLD`) and the checkerboard measure
:func:`nyquist_energy`; a patient is the mean of its slices, the split the mean over patients, with a hierarchical
bootstrap interval and the paired difference to bicubic (:func:`statistics`). See docs/evaluation.md.

Bicubic is the zoo's ``Bicubic`` arch (PyTorch's a = -0.75 kernel, clamped), which scores higher on this data than
MATLAB's a = -0.5 (the stronger baseline is the honest one).
"""
import csv
import os
from collections import defaultdict

import numpy as np

from mrsr_plugin.errors import MRSRUserError
from mrsr_plugin.metrics.mr_metric import FOREGROUND_THRESHOLD

REFERENCE = 'bicubic'
# column -> (registered metric, keyword arguments); *_fg: on the foreground of HR only (one rule for every model,
# mrsr_plugin.metrics.mr_metric.foreground_mask at FOREGROUND_THRESHOLD); *_8bit: BasicSR's metrics on the images
# rounded to 8 bits as its tensor2img does (the paper's convention, for comparison only)
_FG = {'foreground_threshold': FOREGROUND_THRESHOLD}
METRICS = {
    'mr_psnr': ('calculate_mr_psnr', {}),
    'mr_ssim': ('calculate_mr_ssim', {}),
    'mr_psnr_fg': ('calculate_mr_psnr', _FG),
    'mr_ssim_fg': ('calculate_mr_ssim', _FG),
    'ms_ssim': ('calculate_mr_ms_ssim', {}),
    'haarpsi': ('calculate_mr_haarpsi', {}),
    'vsi': ('calculate_mr_vsi', {}),
    'gmsd': ('calculate_mr_gmsd', {}),
    'nrmse': ('calculate_mr_nrmse', {}),
    'nrmse_fg': ('calculate_mr_nrmse', _FG),
    'hfen': ('calculate_mr_hfen', {}),
    'hfen_fg': ('calculate_mr_hfen', _FG),
    'lpips': ('calculate_mr_lpips', {}),
    'dists': ('calculate_mr_dists', {}),
    'psnr_8bit': ('calculate_psnr', {'test_y_channel': False}),
    'ssim_8bit': ('calculate_ssim', {'test_y_channel': False}),
}
# everything float; LPIPS and DISTS only where mrsr-fetch-vgg has made their weights (see usable_metrics)
DEFAULT_METRICS = tuple(m for m in METRICS if not m.endswith('_8bit'))
# the zoo's Table 3: the float metrics and BasicSR's 8-bit PSNR / SSIM (the paper's convention) for comparison
ZOO_METRICS = DEFAULT_METRICS + ('psnr_8bit', 'ssim_8bit')
NOT_METRICS = ('model', 'key', 'patient', 'split', 'nyquist', 'nyquist_hr')
BOOTSTRAP_METHOD = (
    'hierarchical percentile bootstrap: each resample draws as many patients as there are, with replacement, then '
    'within each drawn patient as many of its slices as it has, with replacement; the statistic is the mean over '
    'the drawn patients of their mean over the drawn slices (as the point estimate); the interval is the 2.5th and '
    '97.5th percentile of the resampled statistics (for a 95 % level). Every model and its paired difference to '
    'bicubic use the same resamples (numpy default_rng(seed)), so the pairing of slices holds.')
ONE_PATIENT = ('one patient only: the patient level of the bootstrap is degenerate, so the intervals reflect the '
               'variation between this patient\'s slices, not between patients')


def patient_of(key):
    """``case0004_00_s009`` -> ``case0004`` (keys of ``scripts/lmdb_prepare.py``); other keys are their own patient."""
    return key.split('_')[0]


def nyquist_energy(img):
    """Energy of a (H, W) image on the Nyquist row and column of its 2-D DFT (a 2-pixel checkerboard's frequencies),
    per pixel: ``(sum |F[H/2, :]|^2 + sum |F[:, W/2]|^2) / (H W)^2``; H and W even."""
    spectrum = np.fft.fft2(np.asarray(img, np.float64))
    h, w = spectrum.shape
    return float((np.abs(spectrum[h // 2]) ** 2).sum() + (np.abs(spectrum[:, w // 2]) ** 2).sum()) / (h * w) ** 2


def load_split(data_root, split, scale):
    """Prepared split -> list of ``(key, lr (h, w), hr (s*h, s*w))`` float32 in [0, 1], in key order; h and w may
    differ between slices (patients from other scanners or protocols)."""
    from mrsr_plugin.data.prostate_mr_dataset import ProstateMRPairedDataset
    folder = os.path.join(data_root, split)
    gt, lq = os.path.join(folder, 'HR.lmdb'), os.path.join(folder, f'LR_x{scale}.lmdb')
    for path in (gt, lq):
        if not os.path.isdir(path):
            raise MRSRUserError(f'{path} not found: prepare the data with scripts/lmdb_prepare.py (--scales {scale})')
    dataset = ProstateMRPairedDataset({'name': split, 'dataroot_gt': gt, 'dataroot_lq': lq, 'io_backend':
                                       {'type': 'lmdb'}, 'num_channels': 1, 'phase': 'test', 'scale': scale})
    items = (dataset[i] for i in range(len(dataset)))
    return sorted((item['lq_path'], item['lq'][0].numpy(), item['gt'][0].numpy()) for item in items)


def load_splits(data_root, splits, scale):
    """:func:`load_split` of several splits, pooled (their patients must differ), in key order."""
    slices, seen = [], {}
    for split in splits:
        for item in load_split(data_root, split, scale):
            patient = patient_of(item[0])
            if seen.setdefault(patient, split) != split:
                raise MRSRUserError(f'{data_root}: patient {patient} is in both the {seen[patient]} and the {split} '
                                    'split; pooled splits need distinct patients')
            slices.append(item)
    return sorted(slices, key=lambda s: s[0])


def usable_metrics(names):
    """(the metrics of ``names`` that can run here, one line for each left out): LPIPS and DISTS need the weights
    that ``mrsr-fetch-vgg`` converts into the weights cache."""
    from mrsr_plugin.metrics.piq_metric import missing_perceptual_weights
    usable, skipped = [], []
    for name in names:
        if name not in METRICS:
            raise MRSRUserError(f'unknown metric {name}; choose from {", ".join(METRICS)}')
        message = missing_perceptual_weights(name) if name in ('lpips', 'dists') else None
        if message:
            skipped.append(f'{message}; {name} left out')
        else:
            usable.append(name)
    return usable, skipped


def higher_is_better(metric):
    """Whether a larger value of the column ``metric`` is better (the registered function's ``higher_is_better``)."""
    from basicsr.utils.registry import METRIC_REGISTRY
    return getattr(METRIC_REGISTRY.get(METRICS[metric][0]), 'higher_is_better', True)


def score_slices(name, srs, slices, scale, metrics=DEFAULT_METRICS, hr_nyquist=None):
    """One model's outputs against HR, slice by slice: the one metric loop of the evaluation and the zoo.

    Args:
        name (str): The model's name in the rows.
        srs (sequence[ndarray]): (s*h, s*w) float outputs, one per slice of ``slices``.
        slices (list): :func:`load_split`'s output.
        scale (int): The upscale factor, also the border left out of the metrics.
        metrics (sequence[str]): Columns of :data:`METRICS`; float images in [0, 1], ``data_range`` 1.
        hr_nyquist (dict | None): HR's :func:`nyquist_energy` by key, if already computed.

    Returns:
        list[dict]: One row per slice: ``model``, ``key``, ``patient``, ``nyquist``, ``nyquist_hr`` and the metrics.
    """
    from basicsr.utils.registry import METRIC_REGISTRY
    functions = {m: (METRIC_REGISTRY.get(METRICS[m][0]), METRICS[m][1]) for m in metrics}
    rows = []
    for (key, _, hr), sr in zip(slices, srs, strict=True):
        if sr.shape != hr.shape:
            raise MRSRUserError(f'{name} returns {sr.shape[0]}x{sr.shape[1]} for {key}, HR is '
                                f'{hr.shape[0]}x{hr.shape[1]}: not a x{scale} model')
        row = {'model': name, 'key': key, 'patient': patient_of(key), 'nyquist': nyquist_energy(sr),
               'nyquist_hr': hr_nyquist[key] if hr_nyquist else nyquist_energy(hr)}
        eight_bit = [np.round(np.clip(x, 0, 1) * 255).astype(np.uint8) for x in (sr, hr)]  # as tensor2img
        for metric, (function, kwargs) in functions.items():
            pair = (sr, hr) if getattr(function, 'float_input', False) else eight_bit
            row[metric] = float(function(*pair, crop_border=scale, data_range=1.0, **kwargs))
        rows.append(row)
    return rows


def evaluate(upscalers, slices, scale, metrics=None):
    """Every upscaler on every slice, each slice at its own size (a split may mix matrix sizes).

    Args:
        upscalers (dict[str, Upscaler]): Name -> :class:`mrsr_plugin.apps.infer.core.Upscaler`.
        slices (list): :func:`load_split`'s output.
        scale (int): The upscale factor, also the border left out of the metrics.
        metrics (sequence[str] | None): Columns of :data:`METRICS`; None: those of :data:`DEFAULT_METRICS` that
            :func:`usable_metrics` finds usable.

    Returns:
        tuple[list[dict], dict[str, dict[str, ndarray]]]: :func:`score_slices`' rows of every model, and each
        model's (s*h, s*w) outputs by key.
    """
    metrics = usable_metrics(DEFAULT_METRICS)[0] if metrics is None else metrics
    rows, outputs = [], defaultdict(dict)
    lr = [s[1] for s in slices]  # sizes may differ (scanners, protocols): batches hold one size each
    hr_nyquist = {key: nyquist_energy(hr) for key, _, hr in slices}
    for name, upscaler in upscalers.items():
        srs = [sr for batch in upscaler.batches(lr, desc=name, quiet=True) for sr in batch]
        rows += score_slices(name, srs, slices, scale, metrics, hr_nyquist)
        outputs[name] = {key: sr for (key, _, _), sr in zip(slices, srs)}
    return rows, outputs


def metric_columns(rows):
    """The metric columns of ``rows``, in their order."""
    return [k for k in rows[0] if k not in NOT_METRICS]


def summarise(rows, reference=REFERENCE):
    """Rows -> ``{model: {patient: {metric: mean over its slices, 'slices': n, 'nyquist_vs_bicubic': ratio,
    'hr_nyquist_vs_bicubic': ratio}, 'mean': {metric: mean over patients}}}``; the ratios are the patient's summed
    Nyquist energy of the model's output and of HR over bicubic's (present when the ``reference`` model, default
    'bicubic', was evaluated).
    HR's ratio is the scale for the model's: real MR has noise and edges at the Nyquist frequency that bicubic
    interpolation smooths away, so a faithful output has more of it than bicubic; a checkerboard has far more."""
    metrics = metric_columns(rows)
    table = defaultdict(dict)
    for model in dict.fromkeys(r['model'] for r in rows):
        for patient in dict.fromkeys(r['patient'] for r in rows):
            mine = [r for r in rows if r['model'] == model and r['patient'] == patient]
            entry = {m: float(np.mean([r[m] for r in mine])) for m in metrics}
            entry['slices'] = len(mine)
            energy = [r['nyquist'] for r in rows if r['model'] == reference and r['patient'] == patient]
            if energy:
                entry['nyquist_vs_bicubic'] = float(sum(r['nyquist'] for r in mine) / sum(energy))
                entry['hr_nyquist_vs_bicubic'] = float(sum(r['nyquist_hr'] for r in mine) / sum(energy))
            table[model][patient] = entry
        patients = list(table[model].values())
        table[model]['mean'] = {k: float(np.mean([p[k] for p in patients])) for k in patients[0] if k != 'slices'}
        table[model]['mean']['slices'] = sum(p['slices'] for p in patients)
    return dict(table)


def bootstrap_weights(patients, resamples=2000, seed=0):
    """The hierarchical bootstrap as a weight matrix (see :data:`BOOTSTRAP_METHOD`).

    Args:
        patients (sequence[str]): The patient of each of N slices.
        resamples (int): B. Default: 2000.
        seed (int): Of numpy's ``default_rng``. Default: 0.

    Returns:
        ndarray: (B, N) float64; row b @ (N,) slice values = resample b's mean over patients of the mean over
        slices. Each row sums to 1.
    """
    ids, member_of = np.unique(np.asarray(patients), return_inverse=True)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(ids), size=(resamples, len(ids)))
    weights = np.zeros((resamples, len(patients)))
    for patient in range(len(ids)):
        members = np.flatnonzero(member_of == patient)
        resample_of_draw = np.nonzero(drawn == patient)[0]
        picks = members[rng.integers(0, len(members), size=(len(resample_of_draw), len(members)))]
        np.add.at(weights, (np.repeat(resample_of_draw, len(members)), picks.ravel()),
                  1.0 / (len(members) * len(ids)))
    return weights


def statistics(rows, resamples=2000, seed=0, level=0.95, reference=REFERENCE):
    """Mean over patients with a bootstrap interval, and the paired difference to bicubic, per model and metric.

    Args:
        rows (list[dict]): :func:`score_slices` rows; every model on the same slices.
        resamples, seed: Of :func:`bootstrap_weights`.
        level (float): Of the percentile interval. Default: 0.95.
        reference (str): The model the differences are taken to. Default: 'bicubic'.

    Returns:
        dict: ``method``, ``resamples``, ``seed``, ``level``, ``patients``, ``slices``, ``note`` (:data:`ONE_PATIENT`
        or None) and ``models``: ``{model: {metric: {'mean', 'low', 'high'[, 'diff', 'diff_low', 'diff_high']}}}``,
        the differences (model - reference, slice by slice) when the reference is among the rows.
    """
    by_model = defaultdict(dict)
    for r in rows:
        by_model[r['model']][r['key']] = r
    keys = sorted(next(iter(by_model.values())))
    for model, mine in by_model.items():
        if sorted(mine) != keys:
            raise MRSRUserError(f'{model} was scored on other slices than {next(iter(by_model))}; no pairing')
    patients = [patient_of(k) for k in keys]
    weights = bootstrap_weights(patients, resamples, seed)
    counts = {p: patients.count(p) for p in patients}
    point = np.array([1.0 / (counts[p] * len(counts)) for p in patients])  # the estimate: each slice once
    tail = 100 * (1 - level) / 2
    metrics = metric_columns(rows)
    out = {}
    for model, mine in by_model.items():
        out[model] = {}
        for metric in metrics:
            values = np.array([mine[k][metric] for k in keys])
            entry = dict(zip(('low', 'high'), np.percentile(weights @ values, [tail, 100 - tail]).tolist()))
            entry['mean'] = float(point @ values)
            if reference in by_model and model != reference:
                diff = values - np.array([by_model[reference][k][metric] for k in keys])
                entry['diff'] = float(point @ diff)
                entry.update(zip(('diff_low', 'diff_high'),
                                 np.percentile(weights @ diff, [tail, 100 - tail]).tolist()))
            out[model][metric] = entry
    return {'method': BOOTSTRAP_METHOD, 'reference': reference, 'resamples': resamples, 'seed': seed, 'level': level,
            'patients': len(counts), 'slices': len(keys), 'note': ONE_PATIENT if len(counts) == 1 else None,
            'models': out}


def format_interval(entry, diff=False):
    """``mean [low, high]`` of a :func:`statistics` entry, or of its difference to bicubic (signed); 4 decimals for
    values below 10, else 3."""
    mean, low, high = (entry[k] for k in (('diff', 'diff_low', 'diff_high') if diff else ('mean', 'low', 'high')))
    form = f'{"+" if diff else ""}.{4 if max(abs(low), abs(high)) < 10 else 3}f'
    return f'{mean:{form}} [{low:{form}}, {high:{form}}]'


def format_statistics(stats):
    """Markdown table of :func:`statistics`: a row per metric (with its better direction), a column per model
    (mean [interval]) and per model but bicubic (difference to bicubic [interval])."""
    models = list(stats['models'])
    others = [m for m in models if 'diff' in next(iter(stats['models'][m].values()))]
    header = ['metric'] + models + [f'{m} - {stats["reference"]}' for m in others]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for metric in stats['models'][models[0]]:
        cells = [f'{metric} {"↑" if higher_is_better(metric) else "↓"}']
        cells += [format_interval(stats['models'][m][metric]) for m in models]
        cells += [format_interval(stats['models'][m][metric], diff=True) for m in others]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def write_csv(path, records):
    """``records`` (dicts) as a CSV with the union of their keys as header, in first-seen order."""
    header = list(dict.fromkeys(k for r in records for k in r))
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(records)


def write_csvs(folder, groups):
    """``slices.csv`` (the rows), ``patients.csv`` (a row per model and patient: metric means and slice count) and
    ``intervals.csv`` (a row per model and metric: mean, low, high, diff, diff_low, diff_high) in ``folder``.

    Args:
        groups (list[tuple]): ``(extra, rows, summary, stats)``: :func:`score_slices` rows with their
            :func:`summarise` and :func:`statistics`; ``extra`` (dict, e.g. the scale) leads each of their records.
    """
    os.makedirs(folder, exist_ok=True)
    write_csv(os.path.join(folder, 'slices.csv'), [{**extra, **r} for extra, rows, _, _ in groups for r in rows])
    write_csv(os.path.join(folder, 'patients.csv'), [{**extra, 'model': m, 'patient': p, **v}
                                                     for extra, _, summary, _ in groups
                                                     for m, table in summary.items() for p, v in table.items()])
    write_csv(os.path.join(folder, 'intervals.csv'), [{**extra, 'model': m, 'metric': k, **v}
                                                      for extra, _, _, stats in groups
                                                      for m, table in stats['models'].items()
                                                      for k, v in table.items()])


def format_table(summary, model):
    """Markdown table: per patient and mean, bicubic's and ``model``'s MR PSNR / SSIM, the differences and the
    Nyquist energy ratios of the model and of HR."""
    ref, ours = summary[REFERENCE], summary[model]
    lines = [f'| patient | slices | bicubic MR PSNR | {model} MR PSNR | diff (dB) | bicubic MR SSIM | {model} MR SSIM '
             '| diff | Nyquist energy / bicubic\'s | HR\'s / bicubic\'s |', '|---|---|---|---|---|---|---|---|---|---|']
    for patient in ours:
        r, o = ref[patient], ours[patient]
        lines.append(f'| {patient} | {o["slices"]} | {r["mr_psnr"]:.3f} | {o["mr_psnr"]:.3f} | '
                     f'{o["mr_psnr"] - r["mr_psnr"]:+.3f} | {r["mr_ssim"]:.4f} | {o["mr_ssim"]:.4f} | '
                     f'{o["mr_ssim"] - r["mr_ssim"]:+.4f} | {o.get("nyquist_vs_bicubic", float("nan")):.2f} | '
                     f'{o.get("hr_nyquist_vs_bicubic", float("nan")):.2f} |')
    return '\n'.join(lines)


def busiest_region(img, size):
    """(y, x, size): top-left corner of the (size, size) window of ``img`` with the largest intensity variance, on a
    grid of size // 4."""
    best, corner = -1.0, (0, 0)
    step = max(1, size // 4)
    for y in range(0, img.shape[0] - size + 1, step):
        for x in range(0, img.shape[1] - size + 1, step):
            var = float(img[y:y + size, x:x + size].var())
            if var > best:
                best, corner = var, (y, x)
    return corner[0], corner[1], size


def save_panel(path, panels, region, title):
    """Fig. 7-style PNG: each (name, image, caption) of ``panels`` whole (top row, the region outlined) and the
    ``(y, x, size)`` region zoomed (bottom row). LR images are shown nearest-neighbour upsampled to HR size."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    y, x, size = region
    fig, axes = plt.subplots(2, len(panels), figsize=(2.6 * len(panels), 5.6), squeeze=False)
    for column, (name, img, caption) in enumerate(panels):
        whole, zoom = axes[0, column], axes[1, column]
        whole.imshow(img, cmap='gray', vmin=0, vmax=1, interpolation='nearest')
        whole.add_patch(Rectangle((x - 0.5, y - 0.5), size, size, fill=False, edgecolor='yellow', linewidth=0.8))
        zoom.imshow(img[y:y + size, x:x + size], cmap='gray', vmin=0, vmax=1, interpolation='nearest')
        whole.set_title(name, fontsize=9)
        zoom.set_title(caption, fontsize=8)
        whole.axis('off')
        zoom.axis('off')
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(h_pad=1.5)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def panel_for(slices, outputs, rows, model, scale, path):
    """The panel of the split's slice with the most tissue (highest HR mean): LR, bicubic, ``model``, HR, with the
    slice's MR PSNR / SSIM; the region is HR's busiest 96x96 (scaled down for small slices)."""
    key, lr, hr = max(slices, key=lambda s: float(s[2].mean()))
    score = {r['model']: r for r in rows if r['key'] == key}
    region = busiest_region(hr, min(96, *hr.shape))
    lr_shown = np.kron(lr, np.ones((scale, scale), np.float32))
    panels = [(f'LR (x{scale}, nearest)', lr_shown, 'input'), ('HR', hr, 'reference')]
    panels[1:1] = [(name, outputs[name][key], f'{score[name]["mr_psnr"]:.2f} dB / {score[name]["mr_ssim"]:.4f}')
                   for name in (REFERENCE, model)]
    save_panel(path, panels, region, f'{key} (patient {patient_of(key)}), region y={region[0]} x={region[1]} '
               f'size {region[2]}; MR PSNR / MR SSIM of this slice')
