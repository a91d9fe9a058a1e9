# qemu-cm4: QEMU mps2-an386 (Cortex-M4F), arm-none-eabi-gcc + newlib-nano
CROSS     := arm-none-eabi-
CPU_FLAGS := -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16
BOARD_SRCS := $(BOARD_DIR)/startup.c $(BOARD_DIR)/board.c
LDSCRIPT  := $(BOARD_DIR)/link.ld
