"""scripts/evaluate_through_plane.py: the command line of :mod:`mrsr_plugin.apps.through_plane_evaluation`."""
import argparse
import json
import os
import sys

from mrsr_plugin.apps import through_plane_evaluation
from mrsr_plugin.apps.through_plane import through_plane_config
from mrsr_plugin.apps.through_plane_evaluation import INTERPOLATORS, evaluate_volume, format_table, load_patient
from mrsr_plugin.errors import MRSRUserError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=through_plane_evaluation.__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('-opt', help='through-plane option file: its network_g and its training degradation (the setting '
                   'simulated along z); needed only for checkpoints that do not describe themselves, and wins over '
                   'the checkpoint\'s, with a warning where they differ')
    p.add_argument('-w', '--weights', required=True, help='BasicSR checkpoint (params_ema if present, else params), '
                   'or a name of the weights manifest')
    p.add_argument('--dicom', nargs='+', required=True, help='one folder per patient, each with an axial MR series')
    p.add_argument('--name', default='model', help='the model\'s name in the table')
    p.add_argument('--views', nargs='+', default=['sagittal', 'coronal'], choices=['sagittal', 'coronal'],
                   help='reformats the network runs on; their outputs are averaged')
    p.add_argument('--json', help='write per-slice rows and the per-patient summary to this JSON file')
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--batch', type=int, default=16, help='images per forward pass')
    return p.parse_args(argv)


def main(argv=None):
    from mrsr_plugin.apps.evaluation import summarise
    args = parse_args(argv)
    try:
        import torch

        import mrsr_plugin  # noqa: F401  registers the plugin's archs
        from mrsr_plugin.apps.infer.core import load_generator
        if args.name in INTERPOLATORS:
            raise MRSRUserError(f'--name {args.name} is an interpolation\'s; choose another name')
        upscaler, _ = load_generator(args.weights, opt_path=args.opt, device=torch.device(args.device),
                                     batch=args.batch)
        config = through_plane_config(upscaler.info, args.weights, args.opt)
        rows = []
        for folder in args.dicom:
            patient = os.path.basename(os.path.normpath(folder))
            rows += evaluate_volume(load_patient(folder), patient, config, upscaler, args.name, args.views)
    except MRSRUserError as err:
        print(f'evaluate_through_plane: error: {err}', file=sys.stderr)
        sys.exit(2)
    summary = summarise(rows)
    thin = len(config.kernel()) == 1
    print(f'through-plane x{config.scale}: slice thickness {config.slice_thickness:g} mm, gap {config.slice_gap:g} '
          f'mm, {config.profile} profile -> {config.target_spacing:g} mm; compared: '
          f'{"the slices between the kept ones" if thin else "every output slice"} (float MR metrics, data range 1; '
          'mean = mean over patients):')
    print(format_table(summary, args.name))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'weights': args.weights, 'option_file': args.opt, 'dicom': args.dicom,
                       'degradation': vars(config), 'views': args.views, 'summary': summary, 'rows': rows}, f,
                      indent=1)
    return summary

if __name__ == '__main__':
    main()
