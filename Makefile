# Two commands do all set-up:
#   make book   create .venv if needed, install, execute the CPU-feasible notebooks, build the HTML book
#   make test   style (ruff check, ruff format --check), then the whole test suite (pytest + nbval + a
#               warnings-as-errors book build + a headless-browser check)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: book test notebooks html clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

book: notebooks html

notebooks: $(STAMP)
	$(PY) tools/execute_notebooks.py

html: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo "book: $(CURDIR)/_build/html/index.html"

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

clean:
	rm -rf _build
