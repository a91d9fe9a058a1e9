# qemu-cm33: mps2-an505, Cortex-M33, arm-none-eabi-gcc + newlib-nano (shared port: ../qemu-shared/)
CPU_FLAGS       := -mcpu=cortex-m33 -mthumb -mfloat-abi=hard -mfpu=fpv5-sp-d16
QEMU_UART       := cmsdk
QEMU_UART_BASE  := 0x50200000
QEMU_SYSCLK_HZ  := 20000000
QEMU_BOARD_NAME := qemu-cm33 (mps2-an505, Cortex-M33)
include $(MCU)/boards/qemu-shared/arm.mk
