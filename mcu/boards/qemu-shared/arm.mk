# qemu-shared/arm.mk - what the QEMU Cortex-M boards share (included by their board.mk, which
# sets CPU_FLAGS, QEMU_UART (cmsdk | nrf51), QEMU_UART_BASE, QEMU_SYSCLK_HZ, QEMU_BOARD_NAME
# and holds memory.ld): startup, vectors, UART + SysTick port, sections. The QEMU machine of
# each board is in host_tools/emulator.py (BOARDS), which `make flash` starts.
CROSS      := arm-none-eabi-
SHARED_DIR := $(MCU)/boards/qemu-shared
BOARD_SRCS := $(SHARED_DIR)/startup_arm.c $(SHARED_DIR)/board_arm.c
LDSCRIPT   := $(SHARED_DIR)/sections.ld
BOARD_LDFLAGS := -L$(BOARD_DIR)
EMULATOR   := qemu
CPU_FLAGS  += -DMG_QEMU_UART_$(shell echo $(QEMU_UART) | tr a-z A-Z) \
              -DMG_QEMU_UART_BASE=$(QEMU_UART_BASE)u -DMG_QEMU_SYSCLK_HZ=$(QEMU_SYSCLK_HZ)u \
              -DMG_QEMU_BOARD_NAME='"$(QEMU_BOARD_NAME)"'
