# qemu-rv32: QEMU virt, RV32IMC (the ESP32-C3/C6/H2 class), riscv64-unknown-elf-gcc + picolibc
# (Debian: gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf; rv32im/ilp32 multilib)
CROSS         := riscv64-unknown-elf-
CPU_FLAGS     := -march=rv32imc -mabi=ilp32 -mcmodel=medany
BOARD_SRCS    := $(BOARD_DIR)/startup.S $(BOARD_DIR)/startup.c $(BOARD_DIR)/board.c
LDSCRIPT      := $(BOARD_DIR)/link.ld
BOARD_LDFLAGS := -L$(BOARD_DIR)
LIBC_SPECS    := --specs=picolibc.specs
EMULATOR      := qemu
