# Two commands on a fresh machine (Python 3.10+):
#   make book    set up .venv and build the book into _build/html
#   make test    set up .venv and run the tests and every notebook (pytest --nbval)
# and, for a student:
#   make lab                                    JupyterLab on the notebooks
#   make run NB=chapters/01_mlp/03_losses.ipynb run one notebook in the terminal (progress bar);
#                                               the executed copy goes to _build/executed/
VENV ?= .venv
# -q: Sphinx prints warnings and errors only (without it, myst and myst-nb log their whole
# configuration and every page's progress).
BOOKFLAGS ?= -W --keep-going -q
# JupyterLab's own flags, e.g. LABFLAGS="--no-browser --port 8899"; as root (Docker, Colab-like
# containers) JupyterLab refuses to start without --allow-root.
LABFLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)
TESTFLAGS ?=
NB ?=

.PHONY: setup book test bench lab run bootstrap browser-test
setup:
	@bash tools/setup_env.sh $(VENV)

book: setup
	@echo "building the book into _build/html (a few minutes; only warnings are printed)"
	$(VENV)/bin/jupyter-book build . $(BOOKFLAGS)

test: setup
	$(VENV)/bin/pytest --nbval $(TESTFLAGS)

bench: setup
	$(VENV)/bin/python benchmarks/bench.py

lab: setup
	$(VENV)/bin/jupyter lab $(LABFLAGS) chapters/

run: setup
	@test -n "$(NB)" || { echo "usage: make run NB=chapters/01_mlp/03_losses.ipynb"; exit 2; }
	$(VENV)/bin/python tools/execute_notebooks.py $(NB)

# After changing repository.url in _config.yml (or merging a notebook with an old first cell).
bootstrap: setup
	$(VENV)/bin/python tools/set_bootstrap.py

# Every page of the built book (make book first) in headless Chromium.
browser-test: setup
	$(VENV)/bin/python tools/browser_check.py _build/html
