/* Embeds the guest image built in guest/ so that godwit-vm is one self-contained binary. */
    .section .rodata
    .balign 4096
    .globl gw_guest_image_start
    .globl gw_guest_image_end
gw_guest_image_start:
    .incbin GW_GUEST_BIN_PATH
gw_guest_image_end:
    .section .note.GNU-stack,"",@progbits
