# qemu-cm55: mps3-an547, Cortex-M55, arm-none-eabi-gcc + newlib-nano (shared port: ../qemu-shared/)
CPU_FLAGS       := -mcpu=cortex-m55 -mthumb -mfloat-abi=hard
QEMU_UART       := cmsdk
QEMU_UART_BASE  := 0x59303000
QEMU_SYSCLK_HZ  := 32000000
QEMU_BOARD_NAME := qemu-cm55 (mps3-an547, Cortex-M55)
include $(MCU)/boards/qemu-shared/arm.mk
