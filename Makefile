# Two commands for a fresh machine: `make demo` (the main job end to end) and `make test` (the test suite).
PY := .venv/bin/python
STAMP := .venv/.mmlego-installed

.PHONY: install demo test test-fast data clean

install: $(STAMP)

$(STAMP): tools/install_env.sh requirements/constraints.txt requirements/runtime.txt requirements/export.txt requirements/tests.txt setup.cfg
	bash tools/install_env.sh
	touch $(STAMP)

data: install
	$(PY) tools/make_synthetic_data.py --out data/synthetic

demo: install
	bash tools/demo.sh

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf work_dirs data/synthetic
