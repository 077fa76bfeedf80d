"""Speed of MRDAB and the zoo's baselines against the machine's practical limit; measures, never asserts targets.

In one run on one device (``--device``; CPU or CUDA) it prints a table and writes ``--json``:

1. the practical limit: dense square (n, n) @ (n, n) matmul throughput in the compute dtype, 2 n^3 FLOP each, the
   faster of the two libraries torch ships: BLAS (torch.mm: MKL on x86 CPUs, cuBLAS) and the convolution library
   (oneDNN, cuDNN), whose GEMM runs as a 1x1 convolution of a (1, n, n/32, 32) channels_last image, the same
   (n, n) @ (n, n) product (MKL takes a slow path on AMD CPUs, where oneDNN's is twice as fast); next to it a
   compute-bound 3x3 convolution;
2. per model (MRDAB as in the paper, BasicSR's EDSR in the zoo's size, MSRResNet with SRGAN's 16 blocks, RRDBNet as
   in ESRGAN, the plugin's SRCNN and FSRCNN), scale and batch, on prostate-sized slices (HR 384x384): latency per
   forward, slices/s, MACs per slice (mmengine.analysis, which calls multiply-accumulates 'flops'), achieved FLOP/s
   = 2 MACs batch / latency and its shares of both ceilings, peak memory, and MRDAB's per-slice time and MAC ratios
   to each baseline. The networks run as the plugin's evaluation path makes them (mrsr_plugin.speed: channels_last
   and MRDAB's re-parameterisation by default), while the MACs are always the plain network's, so the FLOP/s count
   useful work only ('merge' does more arithmetic for the same result). Each model and scale runs in a fresh process, so CPU peak RSS belongs to that model alone (its
   batches run smallest first, so a batch's figure is the peak up to that batch);
3. one training iteration of MRDAB-GAN through BasicSR's loop pieces (options/train_mrdab_x4.yml without the
   perceptual loss, whose VGG19 weights are not available offline) on LMDBs prepared on the fly from the embedded
   real MR: step time (feed_data + optimize_parameters), data time (waiting for the prefetcher) and its share.

Every figure is min / median over ``--repeats`` runs after ``--warmup`` runs. On a CPU the larger batches are cut
so that one forward stays under ``--max-forward-s`` seconds (judged from the batch before), which keeps the default
CPU run near 10 minutes on 2 cores.

    python scripts/benchmark_speed.py --json speed.json                        # everything, default settings
    python scripts/benchmark_speed.py --models mrdab edsr --scales 4 --no-train --amp bf16
    python scripts/benchmark_speed.py --no-channels-last --reparameterize none    # the plain networks
"""
import argparse
import contextlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import yaml
from torch.nn import functional as F

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
MODELS = ('mrdab', 'edsr', 'msrresnet', 'rrdbnet', 'srcnn', 'fsrcnn')
LABELS = {'mrdab': 'MRDAB', 'edsr': 'EDSR', 'msrresnet': 'MSRResNet', 'rrdbnet': 'RRDBNet', 'srcnn': 'SRCNN',
          'fsrcnn': 'FSRCNN'}
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
# per device: repeats, warmup, matmul n, max seconds per forward (0: no cut), train batch, train iterations
DEVICE_DEFAULTS = {
    'cpu': dict(repeats=3, warmup=1, matmul_n=2048, max_forward_s=20.0, train_batch=2, train_iters=3),
    'cuda': dict(repeats=20, warmup=5, matmul_n=8192, max_forward_s=0.0, train_batch=32, train_iters=20),
}
# a compute-bound 3x3 convolution (B, C, S, S), C -> C channels: what the convolution library reaches, next to BLAS
CONV_SHAPES = {'cpu': (1, 128, 96, 96), 'cuda': (32, 256, 96, 96)}


class BenchmarkError(Exception):
    """An expected user error: printed as one line, exit status 2."""


def network_options(model, scale):
    """network_g of ``model`` at ``scale``: the paper's MRDAB, the zoo's EDSR, BasicSR's SRGAN and ESRGAN sizes."""
    if model == 'edsr':
        from mrsr_plugin.options import load_options
        return load_options(os.path.join(REPO, 'options', 'zoo', f'train_edsr_x{scale}.yml'))['network_g']
    return {
        'mrdab': dict(type='MRDABNet', num_in_ch=3, num_out_ch=3, upscale=scale),
        'msrresnet': dict(type='MSRResNet', num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=scale),
        'rrdbnet': dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32,
                        scale=scale),
        'srcnn': dict(type='SRCNN', upscale=scale),
        'fsrcnn': dict(type='FSRCNN', upscale=scale),
    }[model]


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_runs(fn, warmup, repeats, device):
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - tic)
    return times


def stats(times):
    return {'min': float(min(times)), 'median': float(np.median(times))}


def device_name(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError), open('/proc/cpuinfo') as f:
        names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
        if names:
            return f'{names[0]} ({os.cpu_count()} CPUs)'
    return f'{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs)'


def throughput(fn, flop, warmup, repeats, device):
    """Times of ``fn`` and its TFLOP/s (``flop`` per call) from the fastest and the median call."""
    times = time_runs(fn, warmup, repeats, device)
    return {'flop': flop, 'repeats': repeats, 'warmup': warmup, 'time_s': stats(times),
            'tflops': {'best': flop / min(times) / 1e12, 'median': flop / float(np.median(times)) / 1e12}}


def ceilings(args, device, dtype, memory_format):
    """The practical limit (the faster (n, n) @ (n, n) matmul of BLAS and the convolution library's GEMM, 2 n^3
    FLOP) and the 3x3 convolution reference."""
    n = args.matmul_n
    if n % 32:
        raise BenchmarkError(f'--matmul-n must be a multiple of 32, got {n}')
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    warmup = max(1, args.warmup)  # at least one: the first call initialises BLAS and the convolution library
    blas = dict(throughput(lambda: a @ b, 2 * n**3, warmup, args.matmul_repeats, device), n=n, library='blas')
    # (1, n, n/32, 32) channels_last is a row-major (n pixels, n channels) matrix; the 1x1 weights are (n, n)
    image = torch.randn(1, n, n // 32, 32, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    weight = a[:, :, None, None]
    with torch.inference_mode():
        gemm = dict(throughput(lambda: F.conv2d(image, weight), 2 * n**3, warmup, args.matmul_repeats, device), n=n,
                    library='convolution GEMM (1x1 convolution, channels_last)')
    matmul = dict(max(blas, gemm, key=lambda r: r['tflops']['median']), blas=blas, convolution_gemm=gemm)
    batch, channels, size, _ = shape = CONV_SHAPES[device.type]
    x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype).contiguous(memory_format=memory_format)
    with torch.inference_mode():
        conv = throughput(lambda: F.conv2d(x, w, padding=1), 2 * batch * channels**2 * 9 * size**2, warmup,
                          args.matmul_repeats, device)
    return matmul, dict(conv, shape=list(shape))


def peak_memory(device):
    """CUDA: max allocated since the last reset; CPU: the process's peak resident set (Linux: ru_maxrss in KiB)."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def forward_worker(job_file):
    """Runs in a fresh process: time one model at one scale for each batch, count its MACs, write the rows."""
    from basicsr.archs import build_network
    from mmengine.analysis import get_model_complexity_info
    from mmengine.logging import MMLogger

    import mrsr_plugin  # noqa: F401  registers the plugin's archs
    from mrsr_plugin.speed import SpeedOptions, evaluation_network

    with open(job_file) as f:
        job = json.load(f)
    device, dtype = torch.device(job['device']), DTYPES[job['dtype']]
    speed = SpeedOptions(channels_last=job['channels_last'], reparameterize=job['reparameterize'],
                         keep_freed_memory=job['keep_freed_memory'])
    speed.configure_allocator(device)
    torch.backends.cudnn.benchmark = True
    memory_format = torch.channels_last if job['channels_last'] else torch.contiguous_format
    baseline = 0 if device.type == 'cuda' else peak_memory(device)  # CPU: peak RSS of the bare process (imports)
    plain = build_network(network_options(job['model'], job['scale'])).to(device, dtype).eval()
    net = evaluation_network(plain, speed, device)
    runner, compile_error = (torch.compile(net), None) if job['compile'] else (net, None)
    amp = torch.autocast(device.type, DTYPES[job['amp']]) if job['amp'] else contextlib.nullcontext()
    lr = job['hr_size'] // job['scale']
    rows, measured = [], {}
    for requested in sorted(job['batches']):
        batch = requested
        if job['max_forward_s'] and measured:
            last = max(measured)
            per_slice = measured[last]['latency_s']['median'] / last
            batch = max(last, min(requested, math.floor(job['max_forward_s'] / per_slice)))
        row = {'model': LABELS[job['model']], 'scale': job['scale'], 'lr_size': lr, 'requested_batch': requested,
               'batch': batch, 'note': ''}
        if batch != requested:
            row['note'] = f'batch {requested} cut to {batch} (--max-forward-s {job["max_forward_s"]:g})'
        if batch in measured:
            rows.append(dict(measured[batch], **{k: row[k] for k in ('requested_batch', 'note')}))
            continue
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        x = torch.rand(batch, 3, lr, lr, device=device, dtype=dtype).contiguous(memory_format=memory_format)
        with torch.inference_mode(), amp:
            if runner is not net:
                try:
                    row['compile_s'] = time_runs(lambda: runner(x), 0, 1, device)[0]
                except Exception as err:  # dynamo and inductor errors share no base class
                    message = (str(err).strip().splitlines() or [''])[0][:100]
                    runner, compile_error = net, f'compile failed ({type(err).__name__}: {message}); eager timings'
            times = time_runs(lambda: runner(x), job['warmup'], job['repeats'], device)
        compiled = f'compiled in {row["compile_s"]:.1f} s' if 'compile_s' in row else None
        row['note'] = '; '.join(n for n in (row['note'], compile_error, compiled) if n)
        row.update(latency_s=stats(times), slices_per_s=batch / float(np.median(times)),
                   peak_memory_bytes=int(peak_memory(device) - baseline))
        rows.append(row)
        measured[batch] = row
    MMLogger.get_current_instance().setLevel('ERROR')
    with torch.no_grad():  # mmengine traces a 1-slice forward of the plain model; counted last, after the peaks
        complexity = get_model_complexity_info(plain, inputs=(x[:1].contiguous(), ), show_table=False,
                                               show_arch=False)
    for row in rows:
        row.update(params=sum(p.numel() for p in plain.parameters()), macs_per_slice=int(complexity['flops']))
        row['achieved_tflops'] = 2 * row['macs_per_slice'] * row['batch'] / row['latency_s']['median'] / 1e12
    with open(job['result_file'], 'w') as f:
        json.dump(rows, f)


def run_worker(job, folder):
    name = f'{job["model"]}_x{job["scale"]}'
    job_file, job['result_file'] = os.path.join(folder, f'{name}.job.json'), os.path.join(folder, f'{name}.json')
    with open(job_file, 'w') as f:
        json.dump(job, f)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), '--worker', job_file], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise BenchmarkError(f'{name} failed:\n{proc.stdout[-3000:]}')
    with open(job['result_file']) as f:
        return json.load(f)


def add_ratios(rows):
    """MRDAB's per-slice time and MACs over each baseline's, at the same scale and requested batch."""
    mrdab = {(r['scale'], r['requested_batch']): r for r in rows if r['model'] == 'MRDAB'}
    for row in rows:
        ref = mrdab.get((row['scale'], row['requested_batch']))
        if ref is not None and row is not ref:
            row['mrdab_time_ratio'] = ((ref['latency_s']['median'] / ref['batch']) /
                                       (row['latency_s']['median'] / row['batch']))
            row['mrdab_mac_ratio'] = ref['macs_per_slice'] / row['macs_per_slice']


def train_benchmark(args, device, folder):
    """MRDAB-GAN iterations as basicsr/train.py runs them: dataset, EnlargedSampler, dataloader, CPUPrefetcher."""
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.data.data_sampler import EnlargedSampler
    from basicsr.data.prefetch_dataloader import CPUPrefetcher
    from basicsr.models import build_model
    from basicsr.utils import set_random_seed
    from basicsr.utils.options import ordered_yaml

    import mrsr_plugin  # noqa: F401  registers MRSRGANModel, MRDABNet, BNINDiscriminator, the dataset
    from mrsr_plugin.cli.prepare import main as prepare_main
    from mrsr_plugin.apps.tinyrun import TINY_D, TINY_G

    data = os.path.join(folder, 'prostate3t')
    prepare_main([os.path.join(REPO, 'datasets', 'prostate3t'), data, '--split-file',
                  os.path.join(REPO, 'datasets', 'prostate3t_split.json'), '--quiet'])
    option_file = os.path.join(REPO, 'options', 'train_mrdab_x4.yml')
    with open(option_file) as f:
        opt = yaml.load(f, Loader=ordered_yaml()[0])
    opt['train'].pop('perceptual_opt')
    opt['speed'] = dict(opt.get('speed') or {}, channels_last=args.channels_last, amp=args.amp, compile=args.compile,
                        keep_freed_memory=args.keep_freed_memory)
    if args.tiny_train:
        opt['network_g'].update(TINY_G)
        opt['network_d'].update(TINY_D)
    opt.update(num_gpu=1 if device.type == 'cuda' else 0, dist=False, rank=0, world_size=1, is_train=True)
    dataset_opt = opt['datasets']['train']
    dataset_opt.update(phase='train', scale=opt['scale'], gt_size=128, batch_size_per_gpu=args.train_batch,
                       dataroot_gt=os.path.join(data, 'train', 'HR.lmdb'),
                       dataroot_lq=os.path.join(data, 'train', f'LR_x{opt["scale"]}.lmdb'))
    if args.train_workers is not None:
        dataset_opt['num_worker_per_gpu'] = args.train_workers
    set_random_seed(opt['manual_seed'])
    torch.backends.cudnn.benchmark = True
    train_set = build_dataset(dataset_opt)
    iters = args.train_warmup + args.train_iters
    enlarge = math.ceil(iters * args.train_batch / len(train_set))  # one epoch holds every iteration
    sampler = EnlargedSampler(train_set, opt['world_size'], opt['rank'], enlarge)
    loader = build_dataloader(train_set, dataset_opt, num_gpu=opt['num_gpu'], dist=False, sampler=sampler,
                              seed=opt['manual_seed'])
    model = build_model(opt)
    prefetcher = CPUPrefetcher(loader)
    step, data_wait = [], []
    for current_iter in range(1, iters + 1):
        tic = time.perf_counter()
        train_data = prefetcher.next()
        fed = time.perf_counter()
        model.update_learning_rate(current_iter)
        model.feed_data(train_data)
        model.optimize_parameters(current_iter)
        sync(device)
        if current_iter > args.train_warmup:
            data_wait.append(fed - tic)
            step.append(time.perf_counter() - fed)
    shares = [d / (d + s) for d, s in zip(data_wait, step)]
    return {'option_file': os.path.relpath(option_file, REPO), 'tiny': args.tiny_train,
            'network_g': dict(opt['network_g']), 'network_d': dict(opt['network_d']), 'speed': opt['speed'],
            'losses': sorted(k for k in opt['train'] if k.endswith('_opt')),
            'note': 'perceptual_opt removed: VGG19 weights are not available offline',
            'batch': args.train_batch, 'gt_size': 128, 'workers': dataset_opt['num_worker_per_gpu'],
            'slices': len(train_set), 'warmup': args.train_warmup, 'iters': args.train_iters,
            'step_s': stats(step), 'data_s': stats(data_wait), 'data_share': stats(shares),
            'samples_per_s': args.train_batch / float(np.median([d + s for d, s in zip(data_wait, step)]))}


def format_table(rows):
    header = ['Model', 'Scale', 'LR', 'Batch', 'Latency min/med (ms)', 'Slices/s', 'MACs/slice', 'TFLOP/s',
              '% matmul', '% conv', 'Peak mem (MiB)', 'MRDAB/this time', 'MRDAB/this MACs', 'Note']
    lines = [[r['model'], f'x{r["scale"]}', f'{r["lr_size"]}x{r["lr_size"]}', str(r['batch']),
              f'{1e3 * r["latency_s"]["min"]:.1f} / {1e3 * r["latency_s"]["median"]:.1f}',
              f'{r["slices_per_s"]:.2f}', f'{r["macs_per_slice"]:.3e}', f'{r["achieved_tflops"]:.3f}',
              f'{100 * r["matmul_share"]:.0f}', f'{100 * r["conv_share"]:.0f}', f'{r["peak_memory_bytes"] / 2**20:.0f}',
              f'{r["mrdab_time_ratio"]:.1f}' if 'mrdab_time_ratio' in r else '',
              f'{r["mrdab_mac_ratio"]:.1f}' if 'mrdab_mac_ratio' in r else '', r['note']] for r in rows]
    widths = [max(len(line[i]) for line in [header] + lines) for i in range(len(header))]
    return '\n'.join('  '.join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in [header] + lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--dtype', default='fp32', choices=list(DTYPES),
                   help='dtype of the weights, inputs and matmul limit of the forwards (fp16: CUDA only); training '
                   'keeps fp32 weights')
    p.add_argument('--amp', choices=['bf16', 'fp16'],
                   help='torch.autocast the forwards and the training (speed.amp; weights stay fp32); the matmul '
                   'limit is then in this dtype')
    p.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=True,
                   help='torch.channels_last networks and inputs (the plugin\'s default)')
    p.add_argument('--reparameterize', default='fold', choices=['none', 'fold', 'merge'],
                   help='MRDAB\'s inference re-parameterisation (MRDABNet.reparameterized); the other models have none')
    p.add_argument('--keep-freed-memory', action=argparse.BooleanOptionalAction, default=True,
                   help='CPU: mrsr_plugin.speed.keep_freed_memory in every process (the plugin\'s default)')
    p.add_argument('--compile', action='store_true', help='torch.compile the models; a failure is a row note')
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=MODELS)
    p.add_argument('--scales', type=int, nargs='+', default=[2, 4], choices=[2, 4])
    p.add_argument('--batch', type=int, nargs='+', default=[1, 8], help='batch sizes of the forwards')
    p.add_argument('--hr-size', type=int, default=384, help='HR slice side; the LR side is this / scale')
    p.add_argument('--repeats', type=int, help='timed runs per figure (default: 3 on CPU, 20 on CUDA)')
    p.add_argument('--warmup', type=int, help='untimed runs before them (default: 1 on CPU, 5 on CUDA)')
    p.add_argument('--max-forward-s', type=float,
                   help='cut larger batches so that a forward should take at most this long; 0: never '
                   '(default: 20 on CPU, 0 on CUDA)')
    p.add_argument('--matmul-n', type=int, help='matmul side (default: 2048 on CPU, 8192 on CUDA)')
    p.add_argument('--matmul-repeats', type=int, default=10, help='timed runs of the matmul and conv3x3 reference')
    p.add_argument('--no-train', action='store_true', help='skip the training iterations')
    p.add_argument('--train-batch', type=int, help='batch of the training iterations (default: 2 on CPU, 32 on CUDA)')
    p.add_argument('--train-iters', type=int, help='timed training iterations (default: 3 on CPU, 20 on CUDA)')
    p.add_argument('--train-warmup', type=int, default=1, help='untimed training iterations before them')
    p.add_argument('--train-workers', type=int, help='dataloader workers (default: the option file, 4)')
    p.add_argument('--tiny-train', action='store_true',
                   help='for tests: train a tiny MRDAB (8 channels, 1 block) and discriminator, not the paper\'s')
    p.add_argument('--json', help='write all results here')
    p.add_argument('--worker', help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.worker:
            return forward_worker(args.worker)
        run(args)
    except BenchmarkError as err:
        print(f'benchmark_speed: error: {err}', file=sys.stderr)
        sys.exit(2)


def run(args):
    device = torch.device('cuda' if args.device == 'auto' and torch.cuda.is_available() else
                          args.device.replace('auto', 'cpu'))
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise BenchmarkError('--device cuda but torch sees no CUDA device')
    if device.type == 'cpu' and args.dtype == 'fp16':
        raise BenchmarkError('--dtype fp16 runs on CUDA only; use --amp fp16 or bf16 on a CPU')
    if args.amp and args.dtype != 'fp32':
        raise BenchmarkError('--amp autocasts fp32 weights; leave --dtype at fp32')
    for key, value in DEVICE_DEFAULTS[device.type].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.repeats, args.matmul_repeats, args.train_iters, args.train_batch, *args.batch) < 1:
        raise BenchmarkError('--repeats, --matmul-repeats, --train-iters, --train-batch and --batch must be positive')
    compute_dtype = args.amp or args.dtype
    env = {'torch': torch.__version__, 'threads': torch.get_num_threads(), 'device': device.type,
           'device_name': device_name(device), 'dtype': args.dtype, 'amp': args.amp, 'compute_dtype': compute_dtype,
           'channels_last': args.channels_last, 'compile': args.compile, 'reparameterize': args.reparameterize,
           'keep_freed_memory': args.keep_freed_memory,
           'python': platform.python_version(),
           'tf32_matmul': torch.backends.cuda.matmul.allow_tf32, 'tf32_cudnn': torch.backends.cudnn.allow_tf32}
    print(f'torch {env["torch"]}, {env["threads"]} threads, {device.type}: {env["device_name"]}, dtype {args.dtype}, '
          f'amp {args.amp or "off"}, channels_last {"on" if args.channels_last else "off"}, '
          f'compile {"on" if args.compile else "off"}, reparameterize {args.reparameterize}, keep_freed_memory '
          f'{"on" if args.keep_freed_memory else "off"}; every figure min / median of {args.repeats} runs after '
          f'{args.warmup} warm-up', flush=True)
    if device.type == 'cuda':  # fp32 convolutions may run as TF32 where the fp32 matmul limit does not
        print(f'TF32: matmul {env["tf32_matmul"]}, cuDNN convolutions {env["tf32_cudnn"]}', flush=True)

    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    limit, conv = ceilings(args, device, DTYPES[compute_dtype], memory_format)
    print(f'matmul limit ({compute_dtype}, n={limit["n"]}, {limit["repeats"]} runs): {limit["tflops"]["best"]:.3f} '
          f'TFLOP/s best, {limit["tflops"]["median"]:.3f} median, from the {limit["library"]} (BLAS '
          f'{limit["blas"]["tflops"]["median"]:.3f}, convolution GEMM {limit["convolution_gemm"]["tflops"]["median"]:.3f}'
          ' median)', flush=True)
    print(f'conv3x3 reference ({compute_dtype}, input {tuple(conv["shape"])}, {conv["repeats"]} runs): '
          f'{conv["tflops"]["best"]:.3f} TFLOP/s best, {conv["tflops"]["median"]:.3f} median', flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models:
            for scale in args.scales:
                tic = time.perf_counter()
                rows += run_worker({'model': model, 'scale': scale, 'batches': args.batch, 'device': device.type,
                                    'dtype': args.dtype, 'amp': args.amp, 'channels_last': args.channels_last,
                                    'compile': args.compile, 'reparameterize': args.reparameterize,
                                    'keep_freed_memory': args.keep_freed_memory,
                                    'hr_size': args.hr_size, 'repeats': args.repeats,
                                    'warmup': args.warmup, 'max_forward_s': args.max_forward_s}, folder)
                print(f'  {LABELS[model]} x{scale}: {time.perf_counter() - tic:.0f} s', flush=True)
        for row in rows:
            row['matmul_share'] = row['achieved_tflops'] / limit['tflops']['median']
            row['conv_share'] = row['achieved_tflops'] / conv['tflops']['median']
        add_ratios(rows)
        training = None if args.no_train else train_benchmark(args, device, folder)

    memory = 'CUDA max allocated' if device.type == 'cuda' else 'peak RSS increase over the bare worker process'
    print(f'\nForwards on HR {args.hr_size}x{args.hr_size} slices (torch.inference_mode; peak memory: {memory}; '
          f'% matmul, % conv: median TFLOP/s over the median matmul limit, conv3x3 reference; MACs from mmengine, '
          'per 1-slice forward):')
    print(format_table(rows))
    if training:
        print(f'\nTraining MRDAB-GAN x4 ({"tiny, for tests" if training["tiny"] else "paper size"}; '
              f'{training["note"]}): batch {training["batch"]}, gt_size 128, {training["workers"]} workers, '
              f'{training["iters"]} iterations after {training["warmup"]} warm-up, speed {training["speed"]}')
        print(f'  step (feed_data + optimize_parameters) {training["step_s"]["min"]:.3f} / '
              f'{training["step_s"]["median"]:.3f} s, data wait {training["data_s"]["min"]:.4f} / '
              f'{training["data_s"]["median"]:.4f} s, data share {100 * training["data_share"]["min"]:.1f} / '
              f'{100 * training["data_share"]["median"]:.1f} %, {training["samples_per_s"]:.2f} samples/s')
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ('worker', 'json')}
        with open(args.json, 'w') as f:
            json.dump({'env': env, 'settings': settings, 'peak_memory_kind': memory, 'matmul': limit,
                       'conv3x3': conv, 'inference': rows, 'training': training}, f, indent=1)
        print(f'written to {args.json}')


if __name__ == '__main__':
    main()
