"""Re-run the paper's comparison (Tables 3 and 4, Fig. 7) for the model zoo on one prepared dataset.

For every option file (default: the zoo's Bicubic test and SRCNN, FSRCNN, EDSR, SRGAN, MRDAB train files at x2 and
x4) it trains the model for ``--iters`` iterations through BasicSR's own pipeline, or with ``--iters 0`` takes
``<checkpoints>/<name>/models/net_g_latest.pth``, then tests every model on the same split, each in a fresh process,
and writes to ``--output``:

    table3.md / .csv    PSNR and SSIM per model and scale: MR-correct float metrics and BasicSR's 8-bit ones
    table4.md / .csv    parameters, MACs per slice (mmengine.analysis), test time for the whole split, per-slice
                        latency, peak memory, device
    results.json        everything above plus the settings
    quality_vs_time.png MR PSNR against per-slice latency
    fig7_xS.png         the same zoomed region from every model at scale S, with its PSNR

    python scripts/benchmark_zoo.py --data datasets/prostate_mr --iters 0              # trained checkpoints
    python scripts/benchmark_zoo.py --data datasets/prostate3t_prepared --split test --iters 20 \\
        --set datasets.train.batch_size_per_gpu=4 datasets.train.gt_size=64        # a small CPU run
"""
import argparse
import copy
import csv
import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np
import yaml

from mrsr_plugin.evaluation import busiest_region

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
DEFAULT_OPTIONS = [  # the paper's order: Table 3 rows
    os.path.join(REPO, 'options', 'zoo', f'{kind}_{model}_x{scale}.yml') for model, kind in (
        ('bicubic', 'test'), ('srcnn', 'train'), ('fsrcnn', 'train'), ('edsr', 'train'), ('srgan', 'train'),
        ('mrdab', 'train')) for scale in (2, 4)
]


class BenchmarkError(Exception):
    """An expected user error: printed as one line, exit status 2."""


def load_options(path):
    from basicsr.utils.options import ordered_yaml
    if not os.path.isfile(path):
        raise BenchmarkError(f'{path}: no such option file')
    with open(path) as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


def apply_sets(opt, assignments):
    """``a.b.c=value`` (value parsed as YAML) into the nested option dict; files without the parent block (e.g. no
    datasets.train in a test file) are left alone."""
    for assignment in assignments:
        keys, sep, value = assignment.partition('=')
        if not sep:
            raise BenchmarkError(f'--set {assignment}: expected KEY=VALUE')
        *parents, leaf = keys.split('.')
        node = opt
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node[leaf] = yaml.safe_load(value)
    return opt


def point_to_data(opt, data_root, split):
    """Train on ``data_root/train``, validate on ``data_root/val``; returns the options of the test dataset."""
    scale = opt['scale']
    for phase, dataset in opt.get('datasets', {}).items():
        folder = 'train' if phase == 'train' else 'val'
        dataset.update(dataroot_gt=os.path.join(data_root, folder, 'HR.lmdb'),
                       dataroot_lq=os.path.join(data_root, folder, f'LR_x{scale}.lmdb'), io_backend={'type': 'lmdb'})
    template = next((d for p, d in opt['datasets'].items() if p != 'train'), None) or opt['datasets']['train']
    test = copy.deepcopy(template)
    test.update(name=f'{split}', phase='test', scale=scale, io_backend={'type': 'lmdb'},
                dataroot_gt=os.path.join(data_root, split, 'HR.lmdb'),
                dataroot_lq=os.path.join(data_root, split, f'LR_x{scale}.lmdb'))
    for key in ('gt_size', 'use_hflip', 'use_rot', 'batch_size_per_gpu', 'num_worker_per_gpu', 'dataset_enlarge_ratio'):
        test.pop(key, None)
    return test


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


def train(opt, run_dir):
    """Train through the plugin's entry (BasicSR's train_pipeline) in a subprocess; returns the checkpoint path."""
    opt = copy.deepcopy(opt)
    opt.setdefault('logger', {})['use_tb_logger'] = False
    opt_file = os.path.join(run_dir, f'{opt["name"]}.yml')
    with open(opt_file, 'w') as f:
        yaml.safe_dump(json.loads(json.dumps(opt)), f, sort_keys=False)
    log = os.path.join(run_dir, f'{opt["name"]}.train.log')
    with open(log, 'w') as out:
        proc = subprocess.run([sys.executable, os.path.join(REPO, 'mrsr_plugin', 'train.py'), '-opt', opt_file],
                              env=dict(os.environ, MRSR_ROOT=run_dir), stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise BenchmarkError(f'training {opt["name"]} failed; see {log}')
    with open(log) as f:
        if not re.search(rf'iter:\s*{opt["train"]["total_iter"]},', f.read()):
            raise BenchmarkError(f'training {opt["name"]} stopped before iteration {opt["train"]["total_iter"]}; '
                                 f'see {log}')
    return os.path.join(run_dir, 'experiments', opt['name'], 'models', 'net_g_latest.pth')


def test_worker(job_file):
    """Runs in a fresh process: test one model on the split, write its results JSON."""
    import resource

    import torch
    from basicsr.archs import build_network
    from basicsr.data import build_dataset
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import tensor2img
    from basicsr.utils.registry import METRIC_REGISTRY
    from mmengine.analysis import get_model_complexity_info
    from mmengine.logging import MMLogger

    import mrsr_plugin  # noqa: F401  registers the plugin's archs, datasets and metrics

    with open(job_file) as f:
        job = json.load(f)
    device = torch.device(job['device'])
    net = build_network(job['network_g']).to(device).eval()
    if job['checkpoint']:
        state = torch.load(job['checkpoint'], map_location='cpu', weights_only=True)
        key = 'params_ema' if 'params_ema' in state else 'params'
        try:
            net.load_state_dict(state[key], strict=True)
        except RuntimeError as err:
            raise BenchmarkError(f'{job["checkpoint"]} does not match network_g of {job["option_file"]}: '
                                 f'{str(err).splitlines()[1].strip()}') from err
    dataset = build_dataset(job['test_dataset'])
    scale = job['scale']
    mr_psnr, mr_ssim = METRIC_REGISTRY.get('calculate_mr_psnr'), METRIC_REGISTRY.get('calculate_mr_ssim')
    rows, latencies = [], []
    start = time.perf_counter()
    with torch.inference_mode():
        for index in range(len(dataset)):
            item = dataset[index]
            lq = item['lq'][None].to(device)
            if index == 0:  # warm-up, not timed
                net(lq)
            if device.type == 'cuda':
                torch.cuda.synchronize()
            tic = time.perf_counter()
            sr = net(lq)
            if device.type == 'cuda':
                torch.cuda.synchronize()
            latencies.append(time.perf_counter() - tic)
            sr = sr.clamp(0, 1)[0].float().cpu()
            gt = item['gt']
            sr_np, gt_np = sr.permute(1, 2, 0).numpy(), gt.permute(1, 2, 0).numpy()
            sr8, gt8 = tensor2img([sr]), tensor2img([gt])
            rows.append({
                'mr_psnr': mr_psnr(sr_np, gt_np, crop_border=scale, data_range=1.0),
                'mr_ssim': mr_ssim(sr_np, gt_np, crop_border=scale, data_range=1.0),
                'psnr': calculate_psnr(sr8, gt8, crop_border=scale, test_y_channel=False),
                'ssim': calculate_ssim(sr8, gt8, crop_border=scale, test_y_channel=False),
            })
            if index == 0:
                np.save(job['first_output'], sr.mean(0).numpy())
                np.save(job['first_gt'], gt.mean(0).numpy())
    total = time.perf_counter() - start
    MMLogger.get_current_instance().setLevel('ERROR')
    shape = tuple(dataset[0]['lq'].shape)
    # mmengine counts multiply-accumulates of layers with weights; a parameter-free model (Bicubic) has none
    complexity = (get_model_complexity_info(net.cpu(), input_shape=shape, show_table=False, show_arch=False)
                  if any(True for _ in net.parameters()) else {'flops': 0})
    peak = (torch.cuda.max_memory_allocated() if device.type == 'cuda' else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    result = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    result.update(
        params=sum(p.numel() for p in net.parameters()), macs_per_slice=int(complexity['flops']),
        lr_shape=list(shape), slices=len(dataset), test_time_s=total, latency_ms_median=1e3 * np.median(latencies),
        latency_ms_min=1e3 * min(latencies), peak_memory_bytes=int(peak),
        peak_memory_kind='CUDA max allocated' if device.type == 'cuda' else 'process peak RSS',
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
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), '--worker', job_file], stdout=out,
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


def write_tables(results, out):
    scales = sorted({r['scale'] for r in results})
    models = list(dict.fromkeys(r['model'] for r in results))
    by = {(r['model'], r['scale']): r for r in results}
    t3_header = ['Model'] + [f'{m} x{s}' for m in ('MR PSNR', 'MR SSIM', 'PSNR (8-bit)', 'SSIM (8-bit)')
                             for s in scales]
    t3 = [[m] + [f'{by[m, s][k]:.4f}' if (m, s) in by else '' for k in ('mr_psnr', 'mr_ssim', 'psnr', 'ssim')
                 for s in scales] for m in models]
    t4_header = ['Model', 'Scale', 'Parameters', 'MACs/slice', 'Test time (s)', 'Slices', 'Latency median (ms)',
                 'Peak memory (MiB)', 'Memory kind', 'Device']
    t4 = [[r['model'], f'x{r["scale"]}', str(r['params']), f'{r["macs_per_slice"]:.3e}', f'{r["test_time_s"]:.2f}',
           str(r['slices']), f'{r["latency_ms_median"]:.1f}', f'{r["peak_memory_bytes"] / 2**20:.0f}',
           r['peak_memory_kind'], r['device']] for r in results]
    for name, header, rows in (('table3', t3_header, t3), ('table4', t4_header, t4)):
        with open(os.path.join(out, f'{name}.csv'), 'w', newline='') as f:
            csv.writer(f).writerows([header] + rows)
        with open(os.path.join(out, f'{name}.md'), 'w') as f:
            f.write('| ' + ' | '.join(header) + ' |\n|' + '---|' * len(header) + '\n')
            f.writelines('| ' + ' | '.join(row) + ' |\n' for row in rows)
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
        fig.suptitle(f'x{scale}: region y={y} x={x} size {size} of the first {points[0]["split"]} slice '
                     '(PSNR: whole split)', fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f'fig7_x{scale}.png'), dpi=120)
        plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--data', default=os.path.join(REPO, 'datasets', 'prostate_mr'),
                   help='output of scripts/lmdb_prepare.py')
    p.add_argument('--split', default='test', choices=['train', 'val', 'test'], help='split to test on')
    p.add_argument('--options', nargs='+', default=DEFAULT_OPTIONS, help='option files of the models')
    p.add_argument('--iters', type=int, default=0, help='train each model this long; 0 = use --checkpoints')
    p.add_argument('--checkpoints', default=os.path.join(REPO, 'experiments'),
                   help='folder holding <name>/models/net_g_latest.pth when --iters 0')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE',
                   help='override option keys in every file, e.g. datasets.train.batch_size_per_gpu=4')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--region', type=int, nargs=3, metavar=('Y', 'X', 'SIZE'), help='Fig. 7 region in HR pixels')
    p.add_argument('--output', help='results folder (default benchmarks/zoo/<time>); never overwritten')
    p.add_argument('--worker', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        if args.worker:
            return test_worker(args.worker)
        run(args)
    except BenchmarkError as err:
        print(f'benchmark_zoo: error: {err}', file=sys.stderr)
        sys.exit(2)


def run(args):
    import torch
    from tqdm import tqdm
    out = os.path.abspath(args.output or os.path.join(REPO, 'benchmarks', 'zoo', time.strftime('%Y%m%d-%H%M%S')))
    if os.path.exists(out):
        raise BenchmarkError(f'{out} exists; results are never overwritten, choose another --output')
    for split in {'train', 'val', args.split} if args.iters else {args.split}:
        if not os.path.isdir(os.path.join(args.data, split, 'HR.lmdb')):
            raise BenchmarkError(f'{args.data}/{split}/HR.lmdb not found; prepare the data with scripts/lmdb_prepare.py')
    device = 'cuda' if args.device == 'auto' and torch.cuda.is_available() else args.device.replace('auto', 'cpu')
    plans = []
    for path in args.options:
        opt = apply_sets(load_options(path), args.set)
        opt['num_gpu'] = 1 if device == 'cuda' else 0
        test_dataset = point_to_data(opt, os.path.abspath(args.data), args.split)
        if not os.path.isdir(test_dataset['dataroot_lq']):
            raise BenchmarkError(f'{test_dataset["dataroot_lq"]} not found: the data has no x{opt["scale"]} LR')
        trainable = opt['network_g']['type'] != 'Bicubic'
        checkpoint = None
        if trainable and not args.iters:
            checkpoint = os.path.join(args.checkpoints, opt['name'], 'models', 'net_g_latest.pth')
            if not os.path.isfile(checkpoint):
                raise BenchmarkError(f'{checkpoint} not found for {path}; train it or pass --iters N')
        plans.append((path, opt, test_dataset, trainable, checkpoint))
    runs = os.path.join(out, 'runs')
    os.makedirs(runs)
    results = []
    for path, opt, test_dataset, trainable, checkpoint in tqdm(plans, desc='models', unit='model'):
        if trainable and args.iters:
            budget(opt, args.iters)
            checkpoint = train(opt, runs)
        job = {'name': opt['name'], 'option_file': path, 'network_g': opt['network_g'], 'checkpoint': checkpoint,
               'test_dataset': test_dataset, 'scale': opt['scale'], 'device': device,
               'first_output': os.path.join(runs, f'{opt["name"]}.sr.npy'),
               'first_gt': os.path.join(runs, f'{opt["name"]}.gt.npy')}
        result = run_test(job, runs)
        result.update(model=label(opt), scale=opt['scale'], option_file=os.path.relpath(path, REPO),
                      checkpoint=checkpoint, split=args.split, first_output=job['first_output'],
                      first_gt=job['first_gt'])
        results.append(result)
    with open(os.path.join(out, 'results.json'), 'w') as f:
        json.dump({'settings': {k: v for k, v in vars(args).items() if k != 'worker'}, 'results': results}, f,
                  indent=1)
    table3, table4 = write_tables(results, out)
    write_plots(results, out, args.region)
    print(f'Table 3 ({args.split} split of {args.data}):\n{table3}\nTable 4:\n{table4}\nwritten to {out}')


if __name__ == '__main__':
    main()
