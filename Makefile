# One-command workflows on a fresh machine (Python 3.10-3.12 as python3, PyPI reachable).
#   make demo   installs into .venv, prepares the embedded real MR sample as LMDB and trains MRDAB-GAN briefly (CPU)
#   make test   installs into .venv and runs the test suite on CPU
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test clean

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

DEMO_DATA := datasets/demo_mr/prepared/report.json

# the embedded real MR slices, prepared by the same script users run on TCIA downloads
$(DEMO_DATA): $(VENV)/.installed $(wildcard datasets/demo_mr/dicom/*/*.dcm) datasets/demo_mr/split.json
	$(BIN)/python scripts/lmdb_prepare.py datasets/demo_mr/dicom datasets/demo_mr/prepared --series-pattern '' \
		--plane any --split-file datasets/demo_mr/split.json --overwrite

demo: install $(DEMO_DATA)
	$(BIN)/python mrsr_plugin/train.py -opt options/demo_mrdab_x2.yml

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) experiments results tb_logger datasets/demo_mr/prepared
