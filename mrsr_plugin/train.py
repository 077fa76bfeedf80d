"""Train with BasicSR's own pipeline and the plugin registered: ``python mrsr_plugin/train.py -opt options/X.yml``.

Takes BasicSR's arguments (``--launcher pytorch|slurm``, ``--auto_resume``, ``--debug``, ``--force_yml``).
"""
from mrsr_plugin.cli.common import run


def main():
    from basicsr.train import train_pipeline
    run(train_pipeline)


if __name__ == '__main__':
    main()
