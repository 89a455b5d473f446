/* Guest entry and interrupt stubs. The host enters every vCPU here in 64-bit mode at CPL0
 * with RSP at the top of that vCPU's kernel stack, RDI = vCPU index, RSI = boot-info address.
 * Interrupts from CPL3 arrive on the same kernel stack (TSS.RSP0). Stubs save the
 * caller-saved registers, call C, and return with iretq. */
    .section .text.entry, "ax"
    .globl _start
    .code64
_start:
    call gw_kernel_main
1:  cli
    hlt
    jmp 1b

    .text
/* Saves caller-saved registers, calls \fn(vector, saved-rax) and stores its return in the
 * saved rax slot (the system call's result). */
.macro ISR name, fn, vector
    .globl \name
\name:
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    mov $\vector, %edi
    mov 64(%rsp), %rsi      /* saved rax: system call number */
    mov %rsp, %rdx          /* saved frame, for the trap reporter */
    call \fn
    mov %rax, 64(%rsp)
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    iretq
.endm

ISR gw_isr_timer, gw_kernel_timer, 0x20
ISR gw_isr_spurious, gw_kernel_spurious, 0xff

/* The workload's system calls: `ud2` with the number in RAX and arguments in RDI/RSI.
 * The #UD exception reaches our IDT on every flavour of KVM, including PVM, where neither
 * `int $0x80` nor SYSCALL from CPL3 arrives at a guest handler able to do port I/O (PVM
 * delivers SYSCALL to native supervisor mode, where IN/OUT/HLT fault). */
ISR gw_isr_ud, gw_kernel_ud, 6

/* Unexpected traps: one entry per vector 0..31 that pushes the vector and reports it. */
.macro TRAP vector
    .globl gw_trap_\vector
gw_trap_\vector:
    mov $\vector, %edi
    jmp gw_trap_common
.endm
gw_trap_common:
    mov %rsp, %rsi          /* the CPU's frame: [error code,] RIP, CS, RFLAGS, RSP, SS */
    and $-16, %rsp
    call gw_kernel_trap     /* never returns */
2:  cli
    hlt
    jmp 2b

    TRAP 0
    TRAP 1
    TRAP 2
    TRAP 3
    TRAP 4
    TRAP 5
    TRAP 6
    TRAP 7
    TRAP 8
    TRAP 9
    TRAP 10
    TRAP 11
    TRAP 12
    TRAP 13
    TRAP 14
    TRAP 15
    TRAP 16
    TRAP 17
    TRAP 18
    TRAP 19
    TRAP 20
    TRAP 21
    TRAP 22
    TRAP 23
    TRAP 24
    TRAP 25
    TRAP 26
    TRAP 27
    TRAP 28
    TRAP 29
    TRAP 30
    TRAP 31

    .section .rodata
    .globl gw_trap_table
    .align 8
gw_trap_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad gw_trap_\v
    .endr

/* Enters CPL3: gw_enter_user(entry, user_stack_top, arg0, arg1) */
    .text
    .globl gw_enter_user
gw_enter_user:
    mov %rdi, %rax          /* entry */
    mov %rsi, %r8           /* stack */
    mov %rdx, %rdi          /* arg0 */
    mov %rcx, %rsi          /* arg1 */
    pushq $0x1b             /* SS = user data */
    pushq %r8               /* RSP */
    pushq $0x3202           /* RFLAGS: IF, IOPL=3 (ports usable from CPL3) */
    pushq $0x23             /* CS = user code */
    pushq %rax              /* RIP */
    iretq

    .section .note.GNU-stack,"",@progbits
