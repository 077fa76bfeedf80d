"""Test with BasicSR's own pipeline and the plugin registered: ``python mrsr_plugin/test.py -opt options/X.yml``."""
from mrsr_plugin.cli.common import run


def main():
    from basicsr.test import test_pipeline
    run(test_pipeline)


if __name__ == '__main__':
    main()
