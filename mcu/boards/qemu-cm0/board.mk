# qemu-cm0: microbit, Cortex-M0, arm-none-eabi-gcc + newlib-nano (shared port: ../qemu-shared/)
CPU_FLAGS       := -mcpu=cortex-m0 -mthumb
QEMU_UART       := nrf51
QEMU_UART_BASE  := 0x40002000
QEMU_SYSCLK_HZ  := 16000000
QEMU_BOARD_NAME := qemu-cm0 (microbit, Cortex-M0)
include $(MCU)/boards/qemu-shared/arm.mk
