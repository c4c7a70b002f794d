# DXR Node — the two set-up commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= config/node.toml
# Debian packages the tests need: the real PACS, the real modality, the real validators, and
# the browser the OHIF viewer test drives (Debian's chromium, used by Playwright via executable_path).
TEST_DEBS := orthanc orthanc-dicomweb dcmtk dicom3tools chromium poppler-utils
# The OHIF viewer test: the built app shipped in the @ohif/app npm tarball, unpacked here.
OHIF_VERSION := 3.13.2
OHIF_DIR := .cache/ohif

.PHONY: run test venv debs ohif bench overlays sample-report clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(VENV)/bin/dxr-node serve --config $(CONFIG)

debs:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# npm (Debian package) fetches the tarball from the npm registry; nothing is built.
ohif:
	@if [ ! -f $(OHIF_DIR)/package/dist/index.html ] || ! grep -q '"version": "$(OHIF_VERSION)"' $(OHIF_DIR)/package/package.json; then \
	  command -v npm >/dev/null || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null; }; \
	  rm -rf $(OHIF_DIR) && mkdir -p $(OHIF_DIR) && \
	  (cd $(OHIF_DIR) && npm pack --silent @ohif/app@$(OHIF_VERSION) >/dev/null && tar xzf ohif-app-$(OHIF_VERSION).tgz && rm ohif-app-$(OHIF_VERSION).tgz); \
	fi

test: debs venv ohif
	$(PY) -m pytest -q tests

# A phantom study's SR rendered by DCMTK dsr2html and its SC result picture, for a human to look at.
sample-report: venv
	$(PY) tools/sample_report.py

# Contact sheet of review overlays for every image in ../shared/data/real-hands (0.1 mm/px assumed):
# the research CLI draws one overlay per image, tools/contact_sheet.py tiles them.
REAL_HANDS ?= ../shared/data/real-hands
overlays: venv
	rm -rf out/overlays/tiles && mkdir -p out/overlays/tiles
	$(VENV)/bin/dxr-node analyze --pixel-spacing 0.1 --overlay-dir out/overlays/tiles $(REAL_HANDS) > out/overlays/results.jsonl
	$(PY) tools/contact_sheet.py --tiles out/overlays/tiles --results out/overlays/results.jsonl --out out/overlays/contact_sheet.png

clean:
	rm -rf $(VENV) var out
