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

.PHONY: setup book test bench lab run bootstrap browser-test full-dry-run dry-run-changed
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

# Every page's `full` schedule on the CPU, capped (issue 28): CNNLIB_MAX_STEPS=2 caps every fit at 2
# steps an epoch and 2 epochs, and each evaluation at 2 batches; the models, input sizes, data-set
# sizes and batch sizes are full's. Nothing is stored: the executed copies go to _build/executed/.
# Each notebook runs in its own process under GNU time, whose peak resident memory (%M, KiB) is
# that of the largest process it waited for: the notebook's kernel. The table: _build/full-dry-run.tsv.
# Each fit's first step is measured (cnnlib.footprint: FLOPs, saved activations, the full schedule's
# steps); tools/dry_run_record.py then records each passing page's fingerprint in
# benchmarks/full_dry_run.tsv and its fits in benchmarks/full_footprint.csv, from which the runtimes
# page estimates a T4's time and memory.
DRY_RUN_NOTEBOOKS ?= $(sort $(wildcard chapters/*/*.ipynb))
full-dry-run: setup
	@mkdir -p _build; printf 'notebook\tpeak_rss_mib\tseconds\tresult\n' > _build/full-dry-run.tsv; failed=0; \
	for nb in $(DRY_RUN_NOTEBOOKS); do \
	  log=$(CURDIR)/_build/footprint/$$(echo "$$nb" | tr / _).csv; rm -f "$$log"; \
	  CNNLIB_FOOTPRINT_LOG="$$log" CNNLIB_FOOTPRINT_PAGE="$$nb" \
	  CNNLIB_BUDGET=full CNNLIB_MAX_STEPS=2 CNNLIB_DEVICE=cpu /usr/bin/time -f '%M %e' -o _build/full-dry-run.time \
	    $(VENV)/bin/python tools/execute_notebooks.py --dry-run "$$nb"; rc=$$?; [ $$rc = 0 ] || failed=1; \
	  tail -n 1 _build/full-dry-run.time | { read kib s; printf '%s\t%d\t%s\t%s\n' "$$nb" $$((kib / 1024)) "$$s" \
	    "$$([ $$rc = 0 ] && echo ok || echo FAILED)"; } >> _build/full-dry-run.tsv; \
	done; cat _build/full-dry-run.tsv; $(VENV)/bin/python tools/dry_run_record.py --update _build/full-dry-run.tsv; \
	exit $$failed

# The pages whose code or budgets changed since their last passing dry run (CI runs this).
dry-run-changed: setup
	@pages="$$($(VENV)/bin/python tools/dry_run_record.py --changed)"; \
	if [ -n "$$pages" ]; then $(MAKE) --no-print-directory full-dry-run DRY_RUN_NOTEBOOKS="$$pages"; \
	else echo "every page's full schedule has been dry-run with its current code (benchmarks/full_dry_run.tsv)"; fi
