# qemu-cm4: mps2-an386, Cortex-M4F, arm-none-eabi-gcc + newlib-nano (shared port: ../qemu-shared/)
CPU_FLAGS       := -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16
QEMU_UART       := cmsdk
QEMU_UART_BASE  := 0x40004000
QEMU_SYSCLK_HZ  := 25000000
QEMU_BOARD_NAME := qemu-cm4 (mps2-an386, Cortex-M4F)
include $(MCU)/boards/qemu-shared/arm.mk
