"""A trained generator against bicubic interpolation on a prepared split, per patient, and a Fig. 7-style panel.

    python scripts/evaluate.py -opt options/demo_mrdab_x2.yml \\
        -w experiments/demo_MRDAB_GAN_x2/models/net_g_latest.pth --data datasets/prostate3t_prepared --split test \\
        --panel experiments/demo_MRDAB_GAN_x2/fig7_test.png
    python scripts/evaluate.py -w mrdab_x2_prostate3t_demo --data datasets/prostate3t_prepared   # a shipped generator

The split is read from ``scripts/lmdb_prepare.py``'s output (``<data>/<split>/HR.lmdb`` and ``LR_x<s>.lmdb``) with
the plugin's ``ProstateMRPairedDataset``; the patient of a slice is its key's case (``case0004_00_s009`` ->
``case0004``), so a patient's slices are never mixed with another's. For every slice both images are compared with
HR as float32 in [0, 1]: MR PSNR and MR SSIM (:mod:`mrsr_plugin.metrics.mr_metric`, ``data_range`` 1,
``crop_border`` = scale) and the checkerboard measure :func:`nyquist_energy`. A patient's value is the mean over its
slices, the split's the mean over patients (each patient counts once, whatever its slice count).

Bicubic is the zoo's ``Bicubic`` arch (PyTorch's a = -0.75 kernel, clamped), which scores higher on this data than
MATLAB's a = -0.5 (the stronger baseline is the honest one).
"""
import argparse
import json
import os
import sys
from collections import defaultdict

import numpy as np

from mrsr_plugin.compat import MRSRUserError

REFERENCE = 'bicubic'
METRICS = ('mr_psnr', 'mr_ssim')


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
    """Prepared split -> list of ``(key, lr (h, w), hr (s*h, s*w))`` float32 in [0, 1], in key order."""
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


def evaluate(upscalers, slices, scale):
    """Every upscaler on every slice.

    Args:
        upscalers (dict[str, Upscaler]): Name -> :class:`mrsr_plugin.infer.core.Upscaler`.
        slices (list): :func:`load_split`'s output.
        scale (int): The upscale factor, also the border left out of the metrics.

    Returns:
        tuple[list[dict], dict[str, dict[str, ndarray]]]: One row per (model, slice) with ``model``, ``key``,
        ``patient``, ``mr_psnr``, ``mr_ssim``, ``nyquist`` and HR's ``nyquist_hr``; and each model's
        (s*h, s*w) outputs by key.
    """
    from mrsr_plugin.metrics.mr_metric import calculate_mr_psnr, calculate_mr_ssim
    rows, outputs = [], defaultdict(dict)
    lr = np.stack([s[1] for s in slices])
    hr_nyquist = {key: nyquist_energy(hr) for key, _, hr in slices}
    for name, upscaler in upscalers.items():
        srs = np.concatenate(list(upscaler.batches(lr, desc=name, quiet=True)))
        for (key, _, hr), sr in zip(slices, srs):
            if sr.shape != hr.shape:
                raise MRSRUserError(f'{name} returns {sr.shape[0]}x{sr.shape[1]} for {key}, HR is '
                                    f'{hr.shape[0]}x{hr.shape[1]}: not a x{scale} model')
            outputs[name][key] = sr
            rows.append({'model': name, 'key': key, 'patient': patient_of(key), 'nyquist': nyquist_energy(sr),
                         'nyquist_hr': hr_nyquist[key],
                         'mr_psnr': calculate_mr_psnr(sr, hr, crop_border=scale, data_range=1.0),
                         'mr_ssim': calculate_mr_ssim(sr, hr, crop_border=scale, data_range=1.0)})
    return rows, outputs


def summarise(rows):
    """Rows -> ``{model: {patient: {metric: mean over its slices, 'slices': n, 'nyquist_vs_bicubic': ratio,
    'hr_nyquist_vs_bicubic': ratio}, 'mean': {metric: mean over patients}}}``; the ratios are the patient's summed
    Nyquist energy of the model's output and of HR over bicubic's (present when a 'bicubic' model was evaluated).
    HR's ratio is the scale for the model's: real MR has noise and edges at the Nyquist frequency that bicubic
    interpolation smooths away, so a faithful output has more of it than bicubic; a checkerboard has far more."""
    table = defaultdict(dict)
    for model in dict.fromkeys(r['model'] for r in rows):
        for patient in dict.fromkeys(r['patient'] for r in rows):
            mine = [r for r in rows if r['model'] == model and r['patient'] == patient]
            entry = {m: float(np.mean([r[m] for r in mine])) for m in METRICS}
            entry['slices'] = len(mine)
            reference = [r['nyquist'] for r in rows if r['model'] == REFERENCE and r['patient'] == patient]
            if reference:
                entry['nyquist_vs_bicubic'] = float(sum(r['nyquist'] for r in mine) / sum(reference))
                entry['hr_nyquist_vs_bicubic'] = float(sum(r['nyquist_hr'] for r in mine) / sum(reference))
            table[model][patient] = entry
        patients = list(table[model].values())
        table[model]['mean'] = {k: float(np.mean([p[k] for p in patients])) for k in patients[0] if k != 'slices'}
        table[model]['mean']['slices'] = sum(p['slices'] for p in patients)
    return dict(table)


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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('-opt', help='option file whose network_g (and scale) the checkpoint fits; not needed for weights '
                   'given by name')
    p.add_argument('-w', '--weights', required=True,
                   help='BasicSR checkpoint (params_ema if present, else params), or a name of the weights manifest')
    p.add_argument('--data', required=True, help='output folder of scripts/lmdb_prepare.py')
    p.add_argument('--split', default='test', choices=['train', 'val', 'test'])
    p.add_argument('--name', default='model', help='the model\'s name in the table')
    p.add_argument('--panel', help='write the Fig. 7-style panel of one slice to this PNG')
    p.add_argument('--json', help='write per-slice rows and the per-patient summary to this JSON file')
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        import torch

        import mrsr_plugin  # noqa: F401  registers the plugin's archs
        from mrsr_plugin.archs.bicubic_arch import Bicubic
        from mrsr_plugin.infer.core import Upscaler, load_generator
        device = torch.device(args.device)
        model, _ = load_generator(args.weights, opt_path=args.opt, device=device)
        if args.name == REFERENCE:
            raise MRSRUserError(f'--name {REFERENCE} is the reference; choose another name')
        slices = load_split(args.data, args.split, model.scale)
        upscalers = {REFERENCE: Upscaler(Bicubic(num_in_ch=1, upscale=model.scale), device), args.name: model}
        rows, outputs = evaluate(upscalers, slices, model.scale)
    except MRSRUserError as err:
        print(f'evaluate: error: {err}', file=sys.stderr)
        sys.exit(2)
    summary = summarise(rows)
    print(f'{args.split} split of {args.data}, x{model.scale}, {len(slices)} slices (float MR metrics, data range 1, '
          f'border {model.scale}; mean = mean over patients):')
    print(format_table(summary, args.name))
    if args.panel:
        panel_for(slices, outputs, rows, args.name, model.scale, args.panel)
        print(f'panel: {args.panel}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'weights': args.weights, 'option_file': args.opt, 'data': args.data, 'split': args.split,
                       'scale': model.scale, 'summary': summary, 'rows': rows}, f, indent=1)
    return summary


if __name__ == '__main__':
    main()
