"""scripts/evaluate_through_plane.py: the command line of :mod:`mrsr_plugin.apps.through_plane_evaluation`."""
import argparse
import json
import os
import sys
import time

from mrsr_plugin.apps import through_plane_evaluation
from mrsr_plugin.apps.through_plane import through_plane_config
from mrsr_plugin.apps.through_plane_evaluation import (INTERPOLATORS, evaluate_volume, external_on_true_slices,
                                                      format_table, patient_stack, thick_image)
from mrsr_plugin.apps.through_plane_reference import (ROI_MM, evaluate_references, export_axial,
                                                     external_candidate, format_reference_table)
from mrsr_plugin.errors import MRSRUserError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=through_plane_evaluation.__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('-opt', help='through-plane option file: its network_g and its training degradation (the setting '
                   'simulated along z); needed only for checkpoints that do not describe themselves, and wins over '
                   'the checkpoint\'s, with a warning where they differ')
    p.add_argument('-w', '--weights', help='BasicSR checkpoint (params_ema if present, else params), or a name of '
                   'the weights manifest; required without --reference')
    p.add_argument('--dicom', nargs='+', required=True, help='one folder per patient, each with an axial MR series; '
                   'with --reference one folder, the axial series to super-resolve')
    p.add_argument('--reference', nargs='+', metavar='FOLDER', help='validate against real references instead of a '
                   'simulation: the same session\'s sagittal or coronal series (same FrameOfReferenceUID), one folder '
                   'each (mrsr_plugin/apps/through_plane_reference.py)')
    p.add_argument('--scale', type=int, help='with --reference and no -w: the through-plane scale of linear and cubic '
                   '(default 2); with -w it must be the model\'s')
    p.add_argument('--roi-mm', type=float, default=ROI_MM, help='with --reference: side (mm) of the region of interest '
                   'along the axial rows and columns; along z it is all the candidates cover')
    p.add_argument('--roi-center', type=float, nargs=3, metavar=('X', 'Y', 'Z'), help='with --reference: centre of the '
                   'region in patient coordinates (mm, LPS); default: the centre of the axial volume')
    p.add_argument('--force', action='store_true', help='with --reference: run the model on an axial series whose '
                   'slice geometry is not the one it was trained for (a warning in the output)')
    p.add_argument('--candidate', nargs='+', default=[], metavar='NAME=FILE', help='score other tools\' outputs too, '
                   'each a volume file in patient coordinates made from --export-axial\'s file (with --reference) or '
                   'from --export-thick\'s (without; one --dicom folder; averaged over the true slices\' thickness)')
    p.add_argument('--export-axial', metavar='FILE', help='with --reference: write the axial series as the candidates '
                   'see it (normalised to [0, 1], float32) to this volume file, the input of another tool, and stop')
    p.add_argument('--export-thick', metavar='FILE', help='without --reference: write the simulated thick-slice '
                   'series of the one --dicom folder (the model\'s input; its slice k on true slice k times the scale) '
                   'to this volume file, the input of another tool, and stop')
    p.add_argument('--crop', type=int, metavar='PIXELS', help='without --reference: score only the central PIXELS x '
                   'PIXELS of every slice (every method alike; for tools too slow for whole slices)')
    p.add_argument('--smoothing', type=float, nargs='+', default=[], metavar='SIGMA_MM', help='with --reference: '
                   'also score every candidate after a 3-D Gaussian blur of each sigma (mm) and report its best over '
                   'them and no blur, since the metrics reward plain smoothing (a blurred cubic beats cubic)')
    p.add_argument('--no-data-consistency', dest='data_consistency', action='store_false', help='with --reference: '
                   'score the network\'s output as it is, without the data-consistency step mrsr-infer applies')
    p.add_argument('--name', default='model', help='the model\'s name in the table')
    p.add_argument('--views', nargs='+', default=['sagittal', 'coronal'], choices=['sagittal', 'coronal'],
                   help='reformats the network runs on; their outputs are averaged')
    p.add_argument('--json', help='write the results to this JSON file: per-slice rows and the per-patient summary; '
                   'with --reference per reference the registration, the region and the metrics')
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--batch', type=int, default=16, help='images per forward pass')
    args = p.parse_args(argv)
    if args.reference is None and args.weights is None:
        p.error('-w/--weights is required without --reference')
    if args.reference is not None and len(args.dicom) != 1:
        p.error('--reference compares one axial series: give one --dicom folder')
    if args.export_axial and args.reference is None:
        p.error('--export-axial goes with --reference')
    if args.smoothing and (args.reference is None or min(args.smoothing) <= 0):
        p.error('--smoothing takes positive sigmas (mm) and goes with --reference')
    if (args.export_thick or args.crop) and args.reference is not None:
        p.error('--export-thick and --crop go without --reference (a simulation)')
    if (args.candidate or args.export_thick) and args.reference is None and len(args.dicom) != 1:
        p.error('--candidate and --export-thick in a simulation take one --dicom folder')
    bad = [c for c in args.candidate if not all(c.partition('=')[0::2])]
    if bad:
        p.error(f'--candidate takes NAME=FILE, got {bad[0]!r}')
    args.candidate = dict(c.partition('=')[0::2] for c in args.candidate)
    return args


def main(argv=None):
    import SimpleITK as sitk

    from mrsr_plugin.apps.evaluation import summarise
    args = parse_args(argv)
    try:
        if args.name in INTERPOLATORS:
            raise MRSRUserError(f'--name {args.name} is an interpolation\'s; choose another name')
        taken = set(args.candidate) & {*INTERPOLATORS, args.name}
        if taken:
            raise MRSRUserError(f'--candidate {sorted(taken)[0]}: a name already taken; choose another')
        if args.export_axial:
            axial = export_axial(args.dicom[0], args.export_axial)
            print(f'wrote {args.export_axial}: {axial.name}, {list(axial.image.GetSize())} voxels (x, y, z), '
                  'normalised to [0, 1]')
            return None
        upscaler = config = None
        if args.weights:
            import torch

            import mrsr_plugin  # noqa: F401  registers the plugin's archs
            from mrsr_plugin.apps.infer.core import load_generator
            upscaler, _ = load_generator(args.weights, opt_path=args.opt, device=torch.device(args.device),
                                         batch=args.batch)
            config = through_plane_config(upscaler.info, args.weights, args.opt)
        if args.reference:
            return reference_main(args, upscaler, config)
        rows = []
        for folder in args.dicom:
            patient = os.path.basename(os.path.normpath(folder))
            stack = patient_stack(folder, args.crop)
            if args.export_thick:
                sitk.WriteImage(thick_image(stack.image, config), args.export_thick)
                step = config.scale * stack.image.GetSpacing()[2]
                print(f'wrote {args.export_thick}: {stack.name} as the model sees it: '
                      f'{config.slice_thickness / config.target_spacing * stack.thickness:g}-mm slices every {step:g} '
                      f'mm simulated from its {stack.thickness:g}-mm slices')
                return None
            external = {name: external_on_true_slices(external_candidate(path), stack.image, stack.thickness)
                        for name, path in args.candidate.items()}
            rows += evaluate_volume(sitk.GetArrayFromImage(stack.image), patient, config, upscaler, args.name,
                                    args.views, external)
    except MRSRUserError as err:
        print(f'evaluate_through_plane: error: {err}', file=sys.stderr)
        sys.exit(2)
    summary = summarise(rows)
    thin = len(config.kernel()) == 1
    print(f'through-plane x{config.scale}: slice thickness {config.slice_thickness:g} mm, gap {config.slice_gap:g} '
          f'mm, {config.profile} profile -> {config.target_spacing:g} mm; compared: '
          f'{"the slices between the kept ones" if thin else "every output slice"} (float MR metrics, data range 1; '
          'mean = mean over patients):')
    print(format_table(summary, args.name, list(args.candidate)))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'weights': args.weights, 'option_file': args.opt, 'dicom': args.dicom,
                       'degradation': vars(config), 'views': args.views, 'summary': summary, 'rows': rows}, f,
                      indent=1)
    return summary


def reference_main(args, upscaler, config):
    """--reference: evaluate_references, a table per reference, --json; returns the result dict."""
    if config is not None and args.scale not in (None, config.scale):
        raise MRSRUserError(f'--scale {args.scale}: {args.weights} is a x{config.scale} through-plane model')
    scale = config.scale if config is not None else args.scale or 2
    start = time.perf_counter()
    result = evaluate_references(args.dicom[0], args.reference, upscaler, config, scale, args.name, args.views,
                                 args.force, args.roi_mm, args.roi_center, desc=args.name, external=args.candidate,
                                 data_consistency=args.data_consistency, smoothing=args.smoothing)
    result['wall_s'] = round(time.perf_counter() - start, 1)
    axial, model = result['axial'], result['model'] or {}
    warning = model.get('geometry_warning')
    if warning:
        print(f'warning: {warning}', file=sys.stderr)
    print(f'{axial["series"]} ({axial["acquisition"]}) along z x{scale} onto the kept-slice grid; each candidate '
          'resampled onto each reference through one rigid registration of the acquired axial series, averaged over '
          'the reference\'s slice thickness; PSNR (data range 1) and SSIM after a linear intensity fit' +
          (f'; {args.name}: {args.weights}' + (' (FORCED: another slice geometry)' if warning else '') if upscaler
           else ''))
    for ref in result['references']:
        reg, roi = ref['registration'], ref['roi']
        print(f'\n{ref["reference"]} ({ref["slice_thickness"]:g}-mm slices): translation '
              f'{", ".join(f"{v:.2f}" for v in reg["translation_mm"])} mm, rotation '
              f'{", ".join(f"{v:.2f}" for v in reg["rotation_deg"])} deg (x, y, z); region {args.roi_mm:g} x '
              f'{args.roi_mm:g} mm around ({", ".join(f"{v:.1f}" for v in roi["centre_mm"])}) mm, all of z covered: '
              f'{roi["voxels"]} voxels\n')
        print(format_reference_table(ref))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'weights': args.weights, 'option_file': args.opt, 'name': args.name, 'views': args.views,
                       'degradation': vars(config) if config else None, **result}, f, indent=1)
    return result


if __name__ == '__main__':
    main()
