/* The guest's tiny runtime: port I/O, the system-call gate, status-page access and the
 * few libc-like helpers a freestanding program needs. Everything here runs at CPL3 unless
 * its name says kernel. */
#ifndef GW_GUEST_RT_H
#define GW_GUEST_RT_H

#include <stddef.h>
#include <stdint.h>

#include "guest/abi.h"

/* Port I/O instructions: CPL0 only (see GW_SYS_OUTL). */
static inline void gw_outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline void gw_outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint8_t gw_inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* System call: `ud2` traps to the CPL0 #UD handler, which returns past it (see entry.S). */
static inline uint64_t gw_syscall0(uint64_t nr)
{
    uint64_t ret = nr;
    __asm__ volatile("ud2" : "+a"(ret)::"memory");
    return ret;
}

static inline struct gw_boot_info *gw_boot_info(void) { return (struct gw_boot_info *)GW_GPA_BOOTINFO; }
static inline struct gw_guest_status *gw_status(void) { return (struct gw_guest_status *)GW_GPA_STATUS; }

static inline uint64_t gw_syscall2(uint64_t nr, uint64_t a0, uint64_t a1)
{
    uint64_t ret = nr;
    __asm__ volatile("ud2" : "+a"(ret) : "D"(a0), "S"(a1) : "memory");
    return ret;
}

/* Reports an event through the control port (argument first, then the event). */
static inline void gw_report(uint32_t event, uint32_t arg)
{
    gw_syscall2(GW_SYS_OUTL, GW_PORT_CTL_ARG, arg);
    gw_syscall2(GW_SYS_OUTL, GW_PORT_CTL, event);
}

/* Waits for the next timer tick (halts in CPL0); returns the vCPU's tick count. */
static inline uint64_t gw_wait_tick(void) { return gw_syscall0(GW_SYS_WAIT_TICK); }

/* Writes a string to COM1. */
void gw_puts(const char *s);
/* Writes "label=<decimal>\n" to COM1. */
void gw_put_kv(const char *label, uint64_t v);

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);

/* splitmix64: a fast, well-mixed generator for page contents and page choice. */
static inline uint64_t gw_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Workloads, entered at CPL3 on every vCPU. */
void gw_workload_mem(uint32_t cpu, struct gw_boot_info *bi);   /* dirtier and idle */
void gw_workload_disk(uint32_t cpu, struct gw_boot_info *bi);
void gw_workload_net(uint32_t cpu, struct gw_boot_info *bi);
void gw_workload_triple_fault(uint32_t cpu, struct gw_boot_info *bi);

#endif
