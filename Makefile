# mgrade-edge: the whole flow.  `make demo` and `make test` set up everything they need.
#   make train   CONFIG=configs/digits_mgrade.toml RUN=runs/demo
#   make convert RUN=runs/demo                 -> runs/demo/int8/model.tflite
#   make firmware BOARD=qemu-cm4 MODEL=runs/demo/int8
#   make flash   BOARD=qemu-cm4|esp32s3|generic-cm MODEL=runs/demo/int8
SHELL := /bin/bash
PYTHON3 ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
CONFIG  ?= configs/digits_mgrade.toml
RUN     ?= runs/demo
MODEL   ?= $(RUN)/int8
BOARD   ?= qemu-cm4
EPOCHS  ?=
APT_PKGS := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm qemu-system-misc gcc-xtensa-lx106

.PHONY: venv toolchain train convert firmware flash demo test clean help

help:
	@sed -n '1,6p' Makefile

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@

# Debian packages for the cross compilers and emulators; installed only when missing.
toolchain:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ $$(id -u) -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

train: venv
	$(PY) -m training.train $(CONFIG) --out $(RUN) $(if $(EPOCHS),--epochs $(EPOCHS))

test: venv toolchain
	$(PY) -m pytest -q tests

demo: venv toolchain
	$(PY) -m training.train $(CONFIG) --out $(RUN) --resume
	$(PY) -m training.memory $(RUN)/checkpoint.pt

clean:
	rm -rf runs build
