# Two commands on a fresh machine (Python 3.10+):
#   make book    set up .venv and build the book into _build/html
#   make test    set up .venv and run the tests and every notebook (pytest --nbval)
VENV ?= .venv
BOOKFLAGS ?=
TESTFLAGS ?=

.PHONY: setup book test bench
setup:
	@bash tools/setup_env.sh $(VENV)

book: setup
	$(VENV)/bin/jupyter-book build . $(BOOKFLAGS)

test: setup
	$(VENV)/bin/pytest --nbval $(TESTFLAGS)

bench: setup
	$(VENV)/bin/python benchmarks/bench.py
