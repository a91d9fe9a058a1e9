# generic-cm: any Cortex-M. Override CPU_FLAGS for your core, e.g.
#   CPU_FLAGS="-mcpu=cortex-m0plus -mthumb"   or   "-mcpu=cortex-m7 -mthumb -mfloat-abi=hard -mfpu=fpv5-d16"
CROSS     := arm-none-eabi-
CPU_FLAGS ?= -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16
BOARD_SRCS := $(BOARD_DIR)/startup.c $(BOARD_DIR)/board.c $(wildcard $(BOARD_DIR)/user_*.c)
LDSCRIPT  ?= $(BOARD_DIR)/link.ld
