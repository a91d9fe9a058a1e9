# qemu-cm7: mps2-an500, Cortex-M7, arm-none-eabi-gcc + newlib-nano (shared port: ../qemu-shared/)
CPU_FLAGS       := -mcpu=cortex-m7 -mthumb -mfloat-abi=hard -mfpu=fpv5-d16
QEMU_UART       := cmsdk
QEMU_UART_BASE  := 0x40004000
QEMU_SYSCLK_HZ  := 25000000
QEMU_BOARD_NAME := qemu-cm7 (mps2-an500, Cortex-M7)
include $(MCU)/boards/qemu-shared/arm.mk
