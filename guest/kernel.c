/* The guest's CPL0 part, kept tiny because CPL0 code is emulated under PVM (~0.5 us per
 * instruction): load an IDT, start the LAPIC timer, drop to CPL3. Afterwards CPL0 only runs
 * the timer handler (count a tick, EOI) and the wait-for-tick system call (sti; hlt).
 * The host built the page tables, GDT and TSSs before entry. */
#include "guest/rt.h"

extern void gw_isr_timer(void);
extern void gw_isr_ud(void);
extern void gw_isr_spurious(void);
extern const uint64_t gw_trap_table[32];
void gw_enter_user(uint64_t entry, uint64_t stack, uint64_t arg0, uint64_t arg1);

#define LAPIC_REG(off) (*(volatile uint32_t *)(GW_LAPIC_BASE + (off)))
#define LAPIC_EOI 0xb0
#define LAPIC_SVR 0xf0
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_DIV 0x3e0

static void set_gate(unsigned vec, uint64_t handler, unsigned dpl)
{
    volatile uint64_t *g = (volatile uint64_t *)(GW_GPA_IDT + 16 * vec);
    uint64_t lo = (handler & 0xffff) | ((uint64_t)GW_SEL_KCODE << 16) |
                  ((uint64_t)(0x8e | (dpl << 5)) << 40) | ((handler >> 16) & 0xffff) << 48;
    g[0] = lo;
    g[1] = handler >> 32;
}

/* Which vCPU runs this code: the kernel stacks are laid out by vCPU index. */
static uint32_t this_cpu(void)
{
    uint64_t sp;
    __asm__ volatile("mov %%rsp, %0" : "=r"(sp));
    return (uint32_t)((sp - GW_GPA_KSTACKS) / GW_KSTACK_SIZE);
}

uint64_t gw_kernel_timer(uint64_t vector, uint64_t rax, void *frame)
{
    struct gw_guest_status *st = gw_status();
    st->vcpu[this_cpu()].ticks++;
    LAPIC_REG(LAPIC_EOI) = 0;
    return rax;
}

uint64_t gw_kernel_spurious(uint64_t vector, uint64_t rax, void *frame) { return rax; }

static uint64_t syscall(uint64_t nr, uint64_t a0, uint64_t a1)
{
    if (nr == GW_SYS_OUTL) { gw_outl((uint16_t)a0, (uint32_t)a1); return 0; }
    if (nr == GW_SYS_OUTB) { gw_outb((uint16_t)a0, (uint8_t)a1); return 0; }
    if (nr == GW_SYS_CRASH) {
        /* Forget the IDT: the next exception (the caller's next ud2) cannot be delivered,
         * nor can the #GP and #DF that follow: a triple fault. */
        struct { uint16_t limit; uint64_t base; } __attribute__((packed)) none = {0, 0};
        __asm__ volatile("lidt %0" ::"m"(none));
        return 0;
    }
    if (nr != GW_SYS_WAIT_TICK) return (uint64_t)-1;
    volatile uint64_t *ticks = &gw_status()->vcpu[this_cpu()].ticks;
    uint64_t t0 = *ticks;
    /* Interrupts are off inside this gate; sti's one-instruction shadow makes sti;hlt atomic. */
    while (*ticks == t0) __asm__ volatile("sti; hlt; cli" ::: "memory");
    return *ticks;
}

/* #UD: a `ud2` from CPL3 is a system call (see entry.S); anything else is a real fault.
 * frame: the stub's r11 r10 r9 r8 rdi rsi rdx rcx rax, then the CPU's RIP CS RFLAGS RSP SS. */
uint64_t gw_kernel_ud(uint64_t vector, uint64_t rax, uint64_t *frame)
{
    const uint8_t *rip = (const uint8_t *)frame[9];
    if ((frame[10] & 3) != 3 || rip[0] != 0x0f || rip[1] != 0x0b) {
        void gw_kernel_trap(uint64_t vector, const uint64_t *frame);
        gw_kernel_trap(6, &frame[9]);
    }
    frame[9] += 2;
    return syscall(rax, frame[4], frame[5]);
}

void gw_kernel_trap(uint64_t vector, const uint64_t *frame)
{
    /* Vectors 8, 10-14, 17, 21, 29 and 30 push an error code before RIP. */
    int has_code = vector == 8 || (vector >= 10 && vector <= 14) || vector == 17 || vector == 21 ||
                   vector == 29 || vector == 30;
    struct gw_guest_status *st = gw_status();
    st->trap_vector = vector;
    st->trap_error_code = has_code ? frame[0] : 0;
    st->trap_rip = frame[has_code ? 1 : 0];
    gw_outl(GW_PORT_CTL_ARG, (uint32_t)vector);
    gw_outl(GW_PORT_CTL, GW_EV_UNEXPECTED_TRAP);
    for (;;) __asm__ volatile("cli; hlt");
}

static void user_main(uint32_t cpu, struct gw_boot_info *bi)
{
    if (bi->workload == GW_WL_DISK) gw_workload_disk(cpu, bi);
    else if (bi->workload == GW_WL_TRIPLE_FAULT) gw_workload_triple_fault(cpu, bi);
    else if (bi->workload == GW_WL_NET_ECHO) gw_workload_net(cpu, bi);
    else gw_workload_mem(cpu, bi);
    gw_report(GW_EV_DONE, cpu);
    for (;;) gw_wait_tick();
}

void gw_kernel_main(uint64_t cpu, struct gw_boot_info *bi)
{
    /* Every vCPU writes the one shared IDT, while the others may already run their
     * workload: each gate is written once, with its final value (vCPU 1 used to set gate 6 to
     * the unexpected-trap entry and then to the system-call one, and vCPU 0's `ud2` system
     * call in between died as "unexpected exception 6" under host load). */
    for (unsigned v = 0; v < 32; v++) set_gate(v, v == 6 ? (uint64_t)gw_isr_ud : gw_trap_table[v], 0);
    set_gate(GW_VEC_TIMER, (uint64_t)gw_isr_timer, 0);
    set_gate(GW_VEC_SPURIOUS, (uint64_t)gw_isr_spurious, 0);
    struct { uint16_t limit; uint64_t base; } __attribute__((packed)) idtr = {256 * 16 - 1, GW_GPA_IDT};
    __asm__ volatile("lidt %0" ::"m"(idtr));

    /* Mask both 8259s: KVM routes GSIs below 16 to the PIC too, and vCPU 0's LVT0 is ExtINT
     * after reset, so a device line (virtio's GSI 5) would otherwise arrive as vector 5. */
    gw_outb(0x21, 0xff);
    gw_outb(0xa1, 0xff);
    LAPIC_REG(LAPIC_SVR) = 0x100 | GW_VEC_SPURIOUS;
    LAPIC_REG(LAPIC_TIMER_DIV) = 0xb; /* divide by 1 */
    LAPIC_REG(LAPIC_LVT_TIMER) = (1u << 17) | GW_VEC_TIMER; /* periodic */
    LAPIC_REG(LAPIC_TIMER_INIT) = bi->lapic_ticks_per_tick;

    gw_outl(GW_PORT_CTL_ARG, (uint32_t)cpu);
    gw_outl(GW_PORT_CTL, GW_EV_BOOTED);
    uint64_t ustack = GW_GPA_USTACKS + (cpu + 1) * GW_USTACK_SIZE - 64;
    gw_enter_user((uint64_t)user_main, ustack, cpu, (uint64_t)bi);
}
