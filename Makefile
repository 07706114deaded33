# Two commands do everything on a fresh machine:
#   make demo   the main job: baseline vs LEAP on real long-tailed data, with its report
#   make test   the test suite
# Both create .venv and install what they need first (idempotent).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
WESNOTH_UNITS := /usr/share/games/wesnoth/1.16/data/core/images/units
WIDELANDS_DATA := /usr/share/games/widelands/data
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install data test demo benchmark clean

install: $(STAMP)

$(STAMP): setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, pinned to the wheels this project is tested with
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	# fastreid's metadata pins torch==1.13.1 (no Python 3.11 wheels): install it without
	# its pins; setup.py lists its real dependencies instead
	$(PIP) install --quiet --no-deps fastreid==1.4.0
	$(PIP) install --quiet -e ".[face,dev,demo]"
	# fastreid's Cython ranking, when a compiler is there (otherwise its Python ranking)
	$(PY) -m leap_plugin.reid.compat
	touch $(STAMP)

# the real image data: Wesnoth's unit sprites (demo, benchmarks) and Widelands' characters
# (the benchmark's second data set), both from Debian packages, read where Debian installs them
data:
	@if [ -d "$(WESNOTH_UNITS)" ]; then echo "wesnoth-1.16-data: present"; else \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wesnoth-1.16-data; fi
	@if [ -d "$(WIDELANDS_DATA)/tribes" ]; then echo "widelands-data: present"; else \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq widelands-data; fi

test: install
	$(PY) -m pytest -q tests

demo: install data
	$(PY) -m leap_plugin.cli.demo --output outputs/demo

benchmark: install data
	$(PY) benchmarks/longtail.py

clean:
	rm -rf $(VENV) outputs build *.egg-info
