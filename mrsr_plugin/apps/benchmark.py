"""Re-run the paper's comparison (Tables 3 and 4, Fig. 7) for the model zoo on one prepared dataset.

Each model is trained (or found, ``--iters 0``) and tested, each in a fresh process, with the metric loop of
:mod:`mrsr_plugin.apps.evaluation` (``score_slices``); see docs/zoo.md. It writes to ``--output``:

    table3.md / .csv    per model and scale, every metric of evaluation.ZOO_METRICS (float MR metrics, masked ones,
                        piq's, NRMSE, HFEN, BasicSR's 8-bit PSNR / SSIM): mean over patients with its hierarchical
                        bootstrap 95 % interval, and the paired difference to Bicubic with its interval
    table4.md / .csv    parameters, MACs per slice (mmengine.analysis; the mean over the slices when their sizes
                        differ), inference time for the whole split, the LR sizes, per-slice latency, peak memory,
                        device
    slices.csv, patients.csv, intervals.csv   per slice, per patient, per metric (with a scale column)
    results.json        everything above plus the settings
    quality_vs_time.png MR PSNR against per-slice latency
    fig7_xS.png         the same zoomed region from every model at scale S, with its PSNR

    python scripts/benchmark_zoo.py --data datasets/prostate_mr --iters 0              # trained checkpoints
    python scripts/benchmark_zoo.py --data datasets/prostate3t_prepared --split test --iters 20 \\
        --force_yml datasets:train:batch_size_per_gpu=4 datasets:train:gt_size=64  # a small CPU run
"""
import copy
import csv
import json
import math
import os
import re
import subprocess
import sys
import time
import types
from collections import Counter

import numpy as np
import yaml

from mrsr_plugin.errors import BenchmarkError
from mrsr_plugin.options import load_options
from mrsr_plugin.apps.evaluation import (BOOTSTRAP_METHOD, FOREGROUND_THRESHOLD, ZOO_METRICS, busiest_region,
                                    format_interval, higher_is_better, statistics, summarise, usable_metrics,
                                    write_csvs)

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(PACKAGE)  # the checkout: options/, datasets/, benchmarks/
DEFAULT_OPTIONS = [  # the paper's order: Table 3 rows
    os.path.join(REPO, 'options', 'zoo', f'{kind}_{model}_x{scale}.yml') for model, kind in (
        ('bicubic', 'test'), ('srcnn', 'train'), ('fsrcnn', 'train'), ('edsr', 'train'), ('srgan', 'train'),
        ('mrdab', 'train')) for scale in (2, 4)
]
DEFAULTS = dict(  # of run()'s settings; the command line shows them
    data=os.path.join(REPO, 'datasets', 'prostate_mr'), split=['test'], options=DEFAULT_OPTIONS, iters=0,
    checkpoints=os.path.join(REPO, 'experiments'), force_yml=[], device='auto', metrics=list(ZOO_METRICS),
    resamples=2000, seed=0, region=None, output=None, resume=False)


def settings(**changes):
    """run()'s settings: :data:`DEFAULTS` with ``changes``."""
    unknown = set(changes) - set(DEFAULTS)
    if unknown:
        raise TypeError(f'unknown benchmark settings: {sorted(unknown)}')
    return types.SimpleNamespace(**{**DEFAULTS, **changes})


def point_to_data(opt, data_root):
    """Train on ``data_root/train``, validate on ``data_root/val`` (the test splits are read by the test worker)."""
    scale = opt['scale']
    for phase, dataset in opt.get('datasets', {}).items():
        folder = 'train' if phase == 'train' else 'val'
        dataset.update(dataroot_gt=os.path.join(data_root, folder, 'HR.lmdb'),
                       dataroot_lq=os.path.join(data_root, folder, f'LR_x{scale}.lmdb'), io_backend={'type': 'lmdb'})


def budget(opt, iters):
    """Train ``iters`` iterations with one log line at the end and no validation, not even BasicSR's final one (the
    benchmark tests instead).

    BasicSR drops the last incomplete batch of an epoch, so a training set smaller than a batch would train for zero
    iterations; the set is enlarged (BasicSR's dataset_enlarge_ratio) until ``iters`` batches fit in one epoch.
    """
    train_set = opt['datasets']['train']
    with open(os.path.join(train_set['dataroot_gt'], 'meta_info.txt')) as f:
        images = sum(1 for line in f if line.strip())
    needed = math.ceil(iters * train_set['batch_size_per_gpu'] / max(images, 1)) + 1
    train_set['dataset_enlarge_ratio'] = max(train_set.get('dataset_enlarge_ratio', 1), needed)
    opt['train']['total_iter'] = iters
    opt['val'] = None
    opt['logger'].update(print_freq=iters, save_checkpoint_freq=10**9)


def finished(log_text, total_iter):
    """Whether a BasicSR training log reached ``total_iter`` (its log line prints the iteration with thousands
    separators: ``iter:   3,200,``)."""
    return re.search(rf'iter:\s*{total_iter:,},', log_text) is not None


def _training_files(opt, run_dir):
    """(log, checkpoint) of training ``opt`` in ``run_dir`` (BasicSR's experiments/ under MRSR_ROOT=run_dir)."""
    return (os.path.join(run_dir, f'{opt["name"]}.train.log'),
            os.path.join(run_dir, 'experiments', opt['name'], 'models', 'net_g_latest.pth'))


def trained_before(opt, run_dir):
    """The checkpoint of an earlier training of ``opt`` in ``run_dir`` that reached its last iteration, else None."""
    log, checkpoint = _training_files(opt, run_dir)
    if not (os.path.isfile(log) and os.path.isfile(checkpoint)):
        return None
    with open(log) as f:
        return checkpoint if finished(f.read(), opt['train']['total_iter']) else None


def train(opt, run_dir):
    """Train through the plugin's entry (BasicSR's train_pipeline) in a subprocess; returns the checkpoint path."""
    opt = copy.deepcopy(opt)
    opt.setdefault('logger', {})['use_tb_logger'] = False
    opt_file = os.path.join(run_dir, f'{opt["name"]}.yml')
    with open(opt_file, 'w') as f:
        yaml.safe_dump(json.loads(json.dumps(opt)), f, sort_keys=False)
    log, checkpoint = _training_files(opt, run_dir)
    with open(log, 'w') as out:
        proc = subprocess.run([sys.executable, os.path.join(PACKAGE, 'train.py'), '-opt', opt_file],
                              env=dict(os.environ, MRSR_ROOT=run_dir), stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise BenchmarkError(f'training {opt["name"]} failed; see {log}')
    with open(log) as f:
        if not finished(f.read(), opt['train']['total_iter']):
            raise BenchmarkError(f'training {opt["name"]} stopped before iteration {opt["train"]["total_iter"]}; '
                                 f'see {log}')
    return checkpoint


def test_worker(job_file):
    """Runs in a fresh process: one model on the split(s), timed slice by slice, scored by the evaluation's
    ``score_slices``; writes its results JSON (the rows and the timing, size and memory figures).

    Slices of several sizes (patients from other scanners or protocols) each run at their own size; MACs per slice
    is the mean over the slices, ``lr_shapes`` counts the slices of each (C, h, w).

    The generator is loaded as the inference command loads it (:func:`mrsr_plugin.apps.infer.core.load_generator`,
    strict, params_ema if present) and runs as its :class:`~mrsr_plugin.apps.infer.core.Upscaler` with batch 1; the
    latency of a slice includes moving it to and from the device; the first slice runs once untimed first (warm-up).
    """
    import resource

    import torch
    from basicsr.archs import build_network
    from mmengine.analysis import get_model_complexity_info
    from mmengine.logging import MMLogger

    import mrsr_plugin  # noqa: F401  registers the plugin's archs, datasets and metrics
    from mrsr_plugin.apps.evaluation import load_splits, score_slices
    from mrsr_plugin.apps.infer.core import Upscaler, input_channels, load_generator

    with open(job_file) as f:
        job = json.load(f)
    device = torch.device(job['device'])
    net = build_network(copy.deepcopy(job['network_g']))  # as trained: its parameters and MACs are counted
    if job['checkpoint']:
        upscaler, _ = load_generator(job['checkpoint'], opt_path=job['network_file'], device=device, batch=1)
    else:
        upscaler = Upscaler(net, device, in_ch=input_channels(net, job['network_g']), batch=1)
    slices = load_splits(job['data'], job['splits'], job['scale'])
    lr = [s[1] for s in slices]  # sizes may differ (scanners, protocols); each slice runs at its own
    next(upscaler.batches(lr[:1], quiet=True))  # warm-up, not timed
    srs, latencies = [], []
    for index in range(len(lr)):
        tic = time.perf_counter()
        srs.append(next(upscaler.batches(lr[index:index + 1], quiet=True))[0])
        latencies.append(time.perf_counter() - tic)
    np.save(job['first_output'], srs[0])
    np.save(job['first_gt'], slices[0][2])
    rows = score_slices(job['label'], srs, slices, job['scale'], job['metrics'])
    MMLogger.get_current_instance().setLevel('ERROR')
    shapes = Counter((upscaler.in_ch, ) + img.shape for img in lr)
    # mmengine counts multiply-accumulates of layers with weights; a parameter-free model (Bicubic) has none
    weighted = any(True for _ in net.parameters())
    macs = {shape: get_model_complexity_info(net.cpu(), input_shape=shape, show_table=False,
                                             show_arch=False)['flops'] if weighted else 0 for shape in shapes}
    peak = (torch.cuda.max_memory_allocated() if device.type == 'cuda' else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    result = dict(
        rows=rows, params=sum(p.numel() for p in net.parameters()),
        macs_per_slice=int(round(sum(macs[shape] * n for shape, n in shapes.items()) / len(lr))),
        lr_shapes={'x'.join(map(str, shape)): n for shape, n in sorted(shapes.items())}, slices=len(slices),
        test_time_s=float(sum(latencies)),
        latency_ms_median=1e3 * float(np.median(latencies)), latency_ms_min=1e3 * min(latencies),
        peak_memory_bytes=int(peak), peak_memory_kind='CUDA max allocated' if device.type == 'cuda' else
        'process peak RSS',
        device=torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({os.cpu_count()} cores)')
    with open(job['result_file'], 'w') as f:
        json.dump(result, f)


def run_test(job, run_dir):
    job_file = os.path.join(run_dir, f'{job["name"]}.test.json')
    job['result_file'] = os.path.join(run_dir, f'{job["name"]}.result.json')
    with open(job_file, 'w') as f:
        json.dump(job, f)
    log = os.path.join(run_dir, f'{job["name"]}.test.log')
    with open(log, 'w') as out:
        proc = subprocess.run([sys.executable, '-m', 'mrsr_plugin.apps.benchmark', job_file], stdout=out,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        with open(log) as f:
            last = [line for line in f.read().splitlines() if line.strip()][-1:]
        raise BenchmarkError(f'testing {job["name"]} failed: {"".join(last)} (see {log})')
    with open(job['result_file']) as f:
        return json.load(f)


def label(opt):
    """The table row of an option file: its ``label`` key if it has one (BasicSR ignores it), else the paper's name
    of its network."""
    net = opt['network_g']['type']
    return opt.get('label') or {'MSRResNet': 'SRGAN', 'MRDABNet': 'MRDAB (ours)'}.get(net, net)


# Table 3's column names of evaluation's metric columns
COLUMNS = {'mr_psnr': 'MR PSNR', 'mr_ssim': 'MR SSIM', 'mr_psnr_fg': 'MR PSNR (fg)', 'mr_ssim_fg': 'MR SSIM (fg)',
           'ms_ssim': 'MS-SSIM', 'haarpsi': 'HaarPSI', 'vsi': 'VSI', 'gmsd': 'GMSD', 'nrmse': 'NRMSE',
           'nrmse_fg': 'NRMSE (fg)', 'hfen': 'HFEN', 'hfen_fg': 'HFEN (fg)', 'lpips': 'LPIPS', 'dists': 'DISTS',
           'psnr_8bit': 'PSNR (8-bit)', 'ssim_8bit': 'SSIM (8-bit)'}


def table3_markdown(results, stats, settings):
    """Table 3 as Markdown that stands alone: what was tested and how, then per scale the mean over patients
    [95 % interval] of every model and the paired difference to Bicubic [95 % interval]."""
    first = next(iter(stats.values()))
    lines = [f'Table 3: {" + ".join(settings["split"])} split of {settings["data"]}, {first["patients"]} patient(s), '
             f'{first["slices"]} slices per model and scale. Each cell: mean over patients (a patient is the mean of '
             f'its slices) [95 % interval]; the difference rows are the model minus Bicubic on the same slices. '
             f'Intervals: {BOOTSTRAP_METHOD[0].upper()}{BOOTSTRAP_METHOD[1:]} {first["resamples"]} resamples, seed '
             f'{first["seed"]}. Float images in [0, 1] (data range 1), border = scale left out. (fg): on the '
             f'foreground of HR only (HR > {FOREGROUND_THRESHOLD} of the range, 3x3 opening, holes filled; the same '
             'pixels for every model). ↑ / ↓: higher / lower is better.']
    if first['note']:
        lines.append(f'Note: {first["note"]}.')
    for scale, stat in stats.items():
        metrics = list(next(iter(stat['models'].values())))
        header = ['Model'] + [f'{COLUMNS[m]} {"↑" if higher_is_better(m) else "↓"}' for m in metrics]
        rule = '|' + '---|' * len(header)
        lines += ['', f'x{scale}', '', '| ' + ' | '.join(header) + ' |', rule]
        lines += ['| ' + ' | '.join([model] + [format_interval(entry[m]) for m in metrics]) + ' |'
                  for model, entry in stat['models'].items()]
        if stat['reference'] not in stat['models']:
            continue  # no Bicubic run at this scale: no differences to show
        lines += ['', f'x{scale}, difference to {stat["reference"]}', '', '| ' + ' | '.join(header) + ' |', rule]
        lines += ['| ' + ' | '.join([model] + [format_interval(entry[m], diff=True) for m in metrics]) + ' |'
                  for model, entry in stat['models'].items() if model != stat['reference']]
    return '\n'.join(lines) + '\n'


def write_tables(results, stats, settings, out):
    """table3.md / .csv (one row per model; per metric and scale the mean, its interval and the difference to
    Bicubic with its interval) and table4.md / .csv; returns both Markdown tables."""
    scales = sorted(stats)
    models = list(dict.fromkeys(r['model'] for r in results))
    metrics = list(next(iter(stats[scales[0]]['models'].values())))
    parts = ('mean', 'low', 'high', 'diff', 'diff_low', 'diff_high')
    t3_header = ['Model'] + [f'{COLUMNS[m]} x{s}' + ('' if part == 'mean' else f' {part.replace("_", " ")}')
                             for m in metrics for s in scales for part in parts]
    t3 = [[m] + [f'{stats[s]["models"][m][k].get(part, "")}' if m in stats[s]['models'] else ''
                 for k in metrics for s in scales for part in parts] for m in models]
    t4_header = ['Model', 'Scale', 'Parameters', 'MACs/slice', 'Inference time (s)', 'Slices', 'LR sizes (slices)',
                 'Latency median (ms)', 'Peak memory (MiB)', 'Memory kind', 'Device']
    t4 = [[r['model'], f'x{r["scale"]}', str(r['params']), f'{r["macs_per_slice"]:.3e}', f'{r["test_time_s"]:.2f}',
           str(r['slices']), ', '.join(f'{shape} ({n})' for shape, n in r['lr_shapes'].items()),
           f'{r["latency_ms_median"]:.1f}', f'{r["peak_memory_bytes"] / 2**20:.0f}', r['peak_memory_kind'],
           r['device']] for r in results]
    for name, header, rows in (('table3', t3_header, t3), ('table4', t4_header, t4)):
        with open(os.path.join(out, f'{name}.csv'), 'w', newline='') as f:
            csv.writer(f).writerows([header] + rows)
    with open(os.path.join(out, 'table3.md'), 'w') as f:
        f.write(table3_markdown(results, stats, settings))
    with open(os.path.join(out, 'table4.md'), 'w') as f:
        f.write('| ' + ' | '.join(t4_header) + ' |\n|' + '---|' * len(t4_header) + '\n')
        f.writelines('| ' + ' | '.join(row) + ' |\n' for row in t4)
    return open(os.path.join(out, 'table3.md')).read(), open(os.path.join(out, 'table4.md')).read()


def write_plots(results, out, region):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for scale, marker in zip(sorted({r['scale'] for r in results}), 'os^D'):
        points = [r for r in results if r['scale'] == scale]
        ax.scatter([r['latency_ms_median'] for r in points], [r['mr_psnr'] for r in points], marker=marker,
                   label=f'x{scale}')
        for r in points:
            ax.annotate(r['model'], (r['latency_ms_median'], r['mr_psnr']), fontsize=7)
    ax.set_xscale('log')
    ax.set_xlabel('latency per slice (ms, log scale)')
    ax.set_ylabel('MR PSNR (dB)')
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, 'quality_vs_time.png'), dpi=120)
    plt.close(fig)
    for scale in sorted({r['scale'] for r in results}):
        points = [r for r in results if r['scale'] == scale]
        gt = np.load(points[0]['first_gt'])
        y, x, size = region if region else busiest_region(gt, min(96, *gt.shape))
        panels = [('HR', gt, None)] + [(r['model'], np.load(r['first_output']), r['mr_psnr']) for r in points]
        fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6))
        for ax, (name, img, psnr) in zip(np.atleast_1d(axes), panels):
            ax.imshow(img[y:y + size, x:x + size], cmap='gray', vmin=0, vmax=1, interpolation='nearest')
            ax.set_title(name if psnr is None else f'{name}\n{psnr:.2f} dB', fontsize=8)
            ax.axis('off')
        fig.suptitle(f'x{scale}: region y={y} x={x} size {size} of the first {"+".join(points[0]["split"])} slice '
                     '(PSNR: whole split)', fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f'fig7_x{scale}.png'), dpi=120)
        plt.close(fig)


def run(args):
    """Train (or find), test and tabulate every model of ``args`` (:func:`settings`); returns the results list of
    results.json, one dict per model and scale."""
    import torch
    from tqdm import tqdm
    out = os.path.abspath(args.output or os.path.join(REPO, 'benchmarks', 'zoo', time.strftime('%Y%m%d-%H%M%S')))
    if os.path.exists(out) and not args.resume:
        raise BenchmarkError(f'{out} exists; results are never overwritten, choose another --output')
    data = os.path.abspath(args.data)
    for split in sorted(set(args.split) | ({'train', 'val'} if args.iters else set())):
        if not os.path.isdir(os.path.join(data, split, 'HR.lmdb')):
            raise BenchmarkError(f'{args.data}/{split}/HR.lmdb not found; prepare the data with '
                                 'scripts/lmdb_prepare.py')
    device = 'cuda' if args.device == 'auto' and torch.cuda.is_available() else args.device.replace('auto', 'cpu')
    metrics, skipped = usable_metrics(args.metrics)
    plans = []
    for path in args.options:
        opt = load_options(path, args.force_yml, missing='skip')  # a file without the block is left alone
        opt['num_gpu'] = 1 if device == 'cuda' else 0
        point_to_data(opt, data)
        for split in args.split:
            if not os.path.isdir(os.path.join(data, split, f'LR_x{opt["scale"]}.lmdb')):
                raise BenchmarkError(f'{args.data}/{split}/LR_x{opt["scale"]}.lmdb not found: the data has no '
                                     f'x{opt["scale"]} LR')
        trainable = opt['network_g']['type'] != 'Bicubic'
        checkpoint = None
        if trainable and not args.iters:
            checkpoint = os.path.join(args.checkpoints, opt['name'], 'models', 'net_g_latest.pth')
            if not os.path.isfile(checkpoint):
                raise BenchmarkError(f'{checkpoint} not found for {path}; train it or pass --iters N')
        plans.append((path, opt, trainable, checkpoint))
    for line in skipped:
        print(line)
    runs = os.path.join(out, 'runs')
    os.makedirs(runs, exist_ok=args.resume)
    results, rows = [], {}
    for path, opt, trainable, checkpoint in tqdm(plans, desc='models', unit='model'):
        if trainable and args.iters:
            budget(opt, args.iters)
            checkpoint = args.resume and trained_before(opt, runs)
            if checkpoint:
                tqdm.write(f'{opt["name"]}: kept its finished training in {runs}')
            else:
                checkpoint = train(opt, runs)
        network_file = os.path.join(runs, f'{opt["name"]}.network_g.yml')  # network_g after --force_yml
        with open(network_file, 'w') as f:
            yaml.safe_dump({'network_g': json.loads(json.dumps(opt['network_g'])), 'scale': opt['scale']}, f)
        job = {'name': opt['name'], 'label': label(opt), 'option_file': path, 'network_g': opt['network_g'],
               'network_file': network_file, 'checkpoint': checkpoint, 'data': data, 'splits': args.split,
               'scale': opt['scale'], 'device': device, 'metrics': metrics,
               'first_output': os.path.join(runs, f'{opt["name"]}.sr.npy'),
               'first_gt': os.path.join(runs, f'{opt["name"]}.gt.npy')}
        result = run_test(job, runs)
        rows.setdefault(opt['scale'], []).extend(result.pop('rows'))
        result.update(model=label(opt), scale=opt['scale'], option_file=os.path.relpath(path, REPO),
                      checkpoint=checkpoint, split=args.split, first_output=job['first_output'],
                      first_gt=job['first_gt'])
        results.append(result)
    reference = label({'network_g': {'type': 'Bicubic'}})
    stats = {scale: statistics(rows[scale], args.resamples, args.seed, reference=reference) for scale in sorted(rows)}
    summaries = {scale: summarise(rows[scale], reference=reference) for scale in sorted(rows)}
    for result in results:
        result['statistics'] = stats[result['scale']]['models'][result['model']]
        result.update({m: v['mean'] for m, v in result['statistics'].items()})
    settings = {k: v for k, v in vars(args).items() if k != 'worker'}
    write_csvs(out, [({'scale': s}, rows[s], summaries[s], stats[s]) for s in sorted(rows)])
    with open(os.path.join(out, 'results.json'), 'w') as f:
        json.dump({'settings': settings, 'skipped_metrics': skipped,
                   'statistics': {s: {k: v for k, v in stat.items() if k != 'models'} for s, stat in stats.items()},
                   'results': results, 'patients': summaries, 'slices': rows}, f, indent=1)
    table3, table4 = write_tables(results, stats, settings, out)
    write_plots(results, out, args.region)
    print(f'{table3}\nTable 4:\n{table4}\nwritten to {out}')
    return results


if __name__ == '__main__':  # the test worker of run_test, in a fresh process
    test_worker(sys.argv[1])
