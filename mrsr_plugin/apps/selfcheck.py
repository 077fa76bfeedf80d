"""Run, on one device, the code paths that differ on CUDA, and print one table: check, result, time.

    mrsr-selfcheck                  # CUDA when available: the paper's network sizes
    mrsr-selfcheck --device cpu     # tiny networks; compile skipped unless --compile
    python -m mrsr_plugin.apps.selfcheck --device cuda

The checks (MRDAB-GAN training in fp32, bf16, fp16 and compiled, resumed and under ``torchrun``; ``mrsr-infer``
batched, tiled and in bf16 / fp16 against fp32, by PSNR (see MIN_PSNR_DB); inference throughput) run on synthetic
MR-like slices in a temporary folder, kept when a check fails. See docs/selfcheck.md.

Exit status: 0 when no check failed (skipped ones are named in the table), 1 otherwise, 2 for a wrong command line.
"""
import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from mrsr_plugin.apps.infer.run import infer, settings
from mrsr_plugin.data.mr_image import encode_png
from mrsr_plugin.apps.tinyrun import (SCALE, TINY_D, TINY_G, free_port, phantom, run_python, tiny_options,
                                 use_prepared_lmdb, write_options)

# per size: network arguments over the constructors' defaults (the paper's), channels, slice side, training crop,
# batch, iterations, train slices, loader workers, the generator's learning rate (the paper's 1e-4 keeps its
# network's first steps from jumping as 1e-3 makes them) and the throughput's largest batch (the tiny network's
# figure means nothing, so its search stays short)
SIZES = {
    'tiny': dict(network_g=TINY_G, network_d=TINY_D, channels=1, hr=48, gt_size=32, batch=2, iters=2, slices=4,
                 workers=0, lr_g=1e-3, max_batch=8),
    'paper': dict(network_g={}, network_d={}, channels=3, hr=256, gt_size=128, batch=16, iters=4, slices=8,
                  workers=2, lr_g=1e-4, max_batch=1024),
}
# least PSNR of an inference output against the fp32 whole-slice one ([0, 1] range). PSNR, not the test suite's
# max |difference|: the self-check's generator has trained a few steps, and at the paper size a few of its pixels
# moved by 33% (tiles), 11% (bf16) and 1.1% (fp16) on a CPU while the PSNRs were 38.9, 40.5 and 57.7 dB; a broken
# path (NaN, zeros, misplaced tiles) ends far below these limits. batch: fp32, or TF32 convolutions on CUDA.
MIN_PSNR_DB = {'batch': 50, 'tiles': 30, 'bf16': 30, 'fp16': 40}
THROUGHPUT_LR = 96  # the paper's 384x384 HR slices at x4
MAX_FORWARD_S = 2.0  # the throughput's batch stops doubling past this forward time
RUN_TIMEOUT_S = 600  # per training process
TRAIN_SCRIPT = str(Path(__file__).parents[1] / 'train.py')  # mrsr-train, run as a file (an entry point: not imported)


class CheckFailed(Exception):
    """A check did not pass; the message is its one-line result."""


class Skipped(Exception):
    """A check that does not apply here; the message says why."""


@dataclass
class Row:
    check: str
    status: str  # ok, FAILED, skipped
    result: str
    seconds: float


def _last_error(log):
    lines = [line.strip() for line in log.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r'error|exception', line, re.IGNORECASE)]
    return (errors or lines or ['no output'])[-1][:200]


class SelfCheck:
    """The checks, in order, sharing one work folder, one data set and the fp32 run's checkpoint."""

    def __init__(self, device, size, work, compile_on_cpu):
        self.device, self.size_name, self.size, self.work = device, size, SIZES[size], Path(work)
        self.compile_on_cpu = compile_on_cpu
        self.rows, self.reference = [], None
        self.env = {'MRSR_ROOT': str(self.work)}

    def run(self, check, fn, *args, **kwargs):
        tic = time.perf_counter()
        try:
            status, result = 'ok', fn(*args, **kwargs)
        except Skipped as err:
            status, result = 'skipped', str(err)
        except CheckFailed as err:
            status, result = 'FAILED', str(err)
        except Exception as err:  # an unexpected error fails its check, not the whole self-check
            status, result = 'FAILED', f'{type(err).__name__}: {_last_error(str(err) or repr(err))}'
        self.rows.append(Row(check, status, result, time.perf_counter() - tic))
        print(f'  {check}: {status} ({self.rows[-1].seconds:.1f} s)', file=sys.stderr, flush=True)

    # --- data ------------------------------------------------------------------------------------------------------

    def prepare_data(self):
        """Synthetic 16-bit slices as PNG 'patients' -> the preparation code -> train/val LMDBs; and the PNG slices
        that inference reads."""
        rng, side, slices = np.random.default_rng(0), self.size['hr'], self.work / 'slices'
        for folder, count in ((slices / 'train_phantom', self.size['slices']), (slices / 'val_phantom', 1),
                              (self.work / 'infer_in', 4)):
            folder.mkdir(parents=True)
            for i in range(count):
                (folder / f'{i:03d}.png').write_bytes(encode_png(phantom(rng, side, bit_depth=16)))
        split = self.work / 'split.json'
        split.write_text(json.dumps({'patients': {'train_phantom': 'train', 'val_phantom': 'val'}}))
        self.command('mrsr_plugin.cli.prepare', str(slices), str(self.work / 'prepared'), '--scales', str(SCALE),
                     '--split-file', str(split), '--quiet')
        report = json.loads((self.work / 'prepared' / 'report.json').read_text())
        return (f'{report["counts"]["train"]} + {report["counts"]["val"]} slices {side}x{side}, 16-bit LMDB; '
                f'4 PNG slices for inference')

    def command(self, module, *args):
        """A command line of the package in a fresh interpreter, as a user runs it; CheckFailed with its last
        line if it fails."""
        proc = run_python(['-m', module, *args], cwd=self.work, timeout=RUN_TIMEOUT_S)
        if proc.returncode != 0:
            raise CheckFailed(f'{module} exited {proc.returncode}: {_last_error(proc.stdout)}')
        return proc.stdout

    # --- training --------------------------------------------------------------------------------------------------

    def options(self, name, speed, network_size=None):
        """tiny_options on the prepared LMDBs at this size, on this device, as MRSRGANModel with MR metrics."""
        size = network_size or self.size
        opt = use_prepared_lmdb(tiny_options(self.work, name, self.size['iters'], 'MRSRGANModel'),
                                self.work / 'prepared', self.size['channels'])
        for key, tiny in (('network_g', TINY_G), ('network_d', TINY_D)):
            for k in tiny:
                opt[key].pop(k)
            opt[key].update(size[key])
        cuda = self.device.type == 'cuda'
        opt['num_gpu'] = 1 if cuda else 0
        opt['datasets']['train'].update(
            gt_size=self.size['gt_size'], batch_size_per_gpu=self.size['batch'],
            num_worker_per_gpu=self.size['workers'], prefetch_mode='cuda' if cuda else None, pin_memory=cuda)
        opt['train']['optim_g']['lr'] = self.size['lr_g']
        opt['val'].update(val_freq=10**9)  # BasicSR validates once more after the last iteration
        opt['val']['metrics']['mr_psnr'] = {'type': 'calculate_mr_psnr', 'crop_border': SCALE}
        opt['logger'].update(save_checkpoint_freq=self.size['iters'])
        opt['speed'] = {'channels_last': True, 'amp': None, 'compile': False, **speed}
        return opt

    def train(self, name, args=(), torchrun=False):
        """One ``mrsr-train`` process (or torchrun with one process); returns its log after checking that it
        trained, stayed finite, validated and saved."""
        command = [TRAIN_SCRIPT, '-opt', str(self.work / f'{name}.yml'), *args]
        if torchrun:
            command = ['-m', 'torch.distributed.run', '--nproc_per_node=1', '--master_addr=127.0.0.1',
                       f'--master_port={free_port()}', *command, '--launcher', 'pytorch']
        try:
            proc = run_python(command, cwd=self.work, env=self.env, timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired as err:
            (self.work / f'{name}.log').write_text(err.output or '')
            raise CheckFailed(f'timed out after {RUN_TIMEOUT_S} s: {_last_error(err.output or "")}') from err
        log = proc.stdout
        (self.work / f'{name}.log').write_text(log)
        if proc.returncode != 0:
            raise CheckFailed(f'exit {proc.returncode}: {_last_error(log)}')
        losses = re.findall(r'\b(l_[a-z_]+): (\S+)', log)
        if not losses:
            raise CheckFailed('no losses logged')
        bad = sorted({k for k, v in losses if not math.isfinite(float(v))})
        if bad:
            raise CheckFailed(f'non-finite {", ".join(bad)}')
        psnr = re.findall(r'# mr_psnr: ([-0-9.naif]+)', log)
        if not psnr or not math.isfinite(float(psnr[-1])):
            raise CheckFailed(f'no finite mr_psnr in the validation ({psnr[-1] if psnr else "none logged"})')
        if not (self.work / 'experiments' / name / 'models' / 'net_g_latest.pth').is_file():
            raise CheckFailed('net_g_latest.pth was not saved')
        return log, float(psnr[-1])

    def train_check(self, name, speed, network_size=None):
        opt = self.options(name, speed, network_size)
        write_options(self.work / f'{name}.yml', opt)
        _, psnr = self.train(name)
        return f'{opt["train"]["total_iter"]} iterations, finite losses, mr_psnr {psnr:.2f} dB'

    def train_fp32(self):
        prefetch = 'cuda' if self.device.type == 'cuda' else 'none (CUDAPrefetcher needs CUDA)'
        return f'{self.train_check("fp32", {})}; prefetch_mode {prefetch}'

    def train_amp(self, amp):
        if amp == 'bf16' and self.device.type == 'cuda' and not torch.cuda.is_bf16_supported():
            raise Skipped(f'{torch.cuda.get_device_name(self.device)} has no bf16')
        scaler = ', GradScaler' if amp == 'fp16' else ''
        return f'{self.train_check(amp, {"amp": amp})}{scaler}'

    def train_compile(self):
        if self.device.type == 'cpu' and not self.compile_on_cpu:
            raise Skipped('CPU: compiling G, D and the validation network takes about a minute on 2 cores; '
                          '--compile runs it')
        return self.train_check('compiled', {'compile': True}, SIZES['tiny'])

    def resume(self):
        if not (self.work / 'experiments' / 'fp32' / 'training_states').is_dir():
            raise CheckFailed('needs the fp32 run, which failed')
        iters = self.size['iters']
        log, _ = self.train('fp32', ['--auto_resume', '--force_yml', f'train:total_iter={2 * iters}'])
        if 'Resuming training from epoch' not in log or f'iter: {iters}.' not in log:
            raise CheckFailed(f'did not resume from iteration {iters}')
        if not (self.work / 'experiments' / 'fp32' / 'models' / f'net_g_{2 * iters}.pth').is_file():
            raise CheckFailed(f'net_g_{2 * iters}.pth was not saved')
        return f'iteration {iters} -> {2 * iters}'

    def torchrun(self):
        write_options(self.work / 'torchrun.yml', self.options('torchrun', {}))
        log, _ = self.train('torchrun', torchrun=True)
        if 'World size (gpu number): 1' not in log:
            raise CheckFailed('BasicSR did not start distributed training')
        backend = 'NCCL' if self.device.type == 'cuda' else 'gloo (NCCL needs CUDA)'
        return f'world size 1, {backend}'

    # --- inference -------------------------------------------------------------------------------------------------

    def infer(self, name, **flags):
        """``mrsr-infer`` (``flags``: its settings) in this process on the PNG slices with the fp32 run's generator
        -> (N, H, W) in [0, 1]."""
        weights = self.work / 'experiments' / 'fp32' / 'models' / 'net_g_latest.pth'
        if not weights.is_file():
            raise CheckFailed('needs the fp32 run, which failed')
        out = self.work / 'infer_out' / name
        out.parent.mkdir(exist_ok=True)
        _, report = infer(settings(str(self.work / 'infer_in'), str(out), str(weights), device=self.device.type,
                                   quiet=True, **flags))  # in this process: the checkpoint says its network
        if report['skipped']:
            raise CheckFailed(f'mrsr-infer skipped {report["skipped"][0]}')
        files = sorted((out / f'infer_in_SRx{SCALE}').glob('*.png'))
        return np.stack([cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in files]).astype(np.float64) / 65535

    def compare(self, kind, **flags):
        if kind == 'bf16' and self.device.type == 'cuda' and not torch.cuda.is_bf16_supported():
            raise Skipped(f'{torch.cuda.get_device_name(self.device)} has no bf16')
        if self.reference is None:
            self.reference = self.infer('fp32_whole', batch=1)
        output = self.infer(kind, **flags)
        if output.shape != self.reference.shape:
            raise CheckFailed(f'shape {output.shape} instead of {self.reference.shape}')
        difference = output - self.reference
        mse = float(np.mean(difference**2))
        psnr = 10 * math.log10(1 / mse) if mse > 0 else math.inf
        verdict = (f'PSNR {psnr:.1f} dB (at least {MIN_PSNR_DB[kind]}), max |difference| '
                   f'{100 * np.abs(difference).max():.3f}% of the range')
        if not psnr >= MIN_PSNR_DB[kind]:
            raise CheckFailed(verdict)
        return f'{verdict}; {len(output)} slices {output.shape[1]}x{output.shape[2]}'

    def throughput(self):
        """MRDAB x4 (random weights, 3 channels) in bf16 as mrsr-infer runs it, batch doubled while it pays."""
        from mrsr_plugin.archs.mrdab_arch import MRDABNet
        from mrsr_plugin.apps.infer.core import Upscaler
        if self.device.type == 'cuda' and not torch.cuda.is_bf16_supported():
            raise Skipped(f'{torch.cuda.get_device_name(self.device)} has no bf16')
        upscaler = Upscaler(MRDABNet(upscale=4, **self.size['network_g']), self.device, precision='bf16')
        repeats = 3 if self.device.type == 'cuda' else 1
        best, batch, tried = (0.0, 0), 1, []
        while True:
            x = torch.rand(batch, 1, THROUGHPUT_LR, THROUGHPUT_LR)
            try:
                upscaler.forward(x)  # warm-up (and cuDNN's algorithm choice)
                tic = time.perf_counter()
                for _ in range(repeats):
                    upscaler.forward(x)
                seconds = (time.perf_counter() - tic) / repeats
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                tried.append(f'{batch} out of memory')
                break
            rate = batch / seconds
            tried.append(str(batch))
            if rate < 1.05 * best[0] or seconds > MAX_FORWARD_S or batch == self.size['max_batch']:
                best = max(best, (rate, batch))
                break
            best, batch = (rate, batch), 2 * batch
        return (f'{best[0]:.1f} slices/s at batch {best[1]} (tried {", ".join(tried)}; 96x96 -> 384x384, bf16, '
                f'channels_last, fold)')

    def all(self):
        self.run('data: synthetic slices -> LMDB', self.prepare_data)
        self.run('train fp32, channels_last, prefetch', self.train_fp32)
        self.run('train bf16 AMP', self.train_amp, 'bf16')
        self.run('train fp16 AMP', self.train_amp, 'fp16')
        self.run('train compile (tiny networks)', self.train_compile)
        self.run('resume (--auto_resume)', self.resume)
        self.run('torchrun, 1 process', self.torchrun)
        self.run('infer batch 4 vs 1 (fp32)', self.compare, 'batch', batch=4)
        side = self.size['hr']
        self.run(f'infer tiles {side // 2}+{side // 4} vs whole (fp32)', self.compare, 'tiles', tile=side // 2,
                 tile_overlap=side // 4, batch=4)
        self.run('infer --precision bf16 vs fp32', self.compare, 'bf16', precision='bf16', batch=4)
        self.run('infer --precision fp16 vs fp32', self.compare, 'fp16', precision='fp16', batch=4)
        self.run(f'throughput MRDAB x4 ({self.size_name}), bf16', self.throughput)
        return self.rows


def format_table(rows):
    lines = [('check', 'result', 'time')] + [(r.check, f'{r.status}: {r.result}', f'{r.seconds:.1f} s')
                                             for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(2)]
    return '\n'.join(f'{a.ljust(widths[0])}  {b.ljust(widths[1])}  {c}'.rstrip() for a, b, c in lines)
