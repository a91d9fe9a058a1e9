# qemu-cm3: mps2-an385, Cortex-M3, arm-none-eabi-gcc + newlib-nano (shared port: ../qemu-shared/)
CPU_FLAGS       := -mcpu=cortex-m3 -mthumb
QEMU_UART       := cmsdk
QEMU_UART_BASE  := 0x40004000
QEMU_SYSCLK_HZ  := 25000000
QEMU_BOARD_NAME := qemu-cm3 (mps2-an385, Cortex-M3)
include $(MCU)/boards/qemu-shared/arm.mk
