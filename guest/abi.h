/* The contract between the VM host (engine/vm) and our guest workloads (guest/): where things
 * live in guest-physical memory, what the host hands the guest in the boot-info page, the
 * status page through which the guest publishes its counters, and the I/O ports and MMIO
 * windows of the devices. Included by freestanding guest code and by the host, so it uses
 * only fixed-width types and no library calls. Guest-physical == guest-virtual (identity map). */
#ifndef GW_GUEST_ABI_H
#define GW_GUEST_ABI_H

#include <stdint.h>

#define GW_ABI_VERSION 1u
#define GW_BOOT_MAGIC 0x74697764676f47ull   /* "Godwit" */
#define GW_STATUS_MAGIC 0x5354415453774700ull

/* ---- guest-physical layout (all below 1 MiB is host-built boot data) ---- */
#define GW_GPA_BOOTINFO 0x1000ull      /* struct gw_boot_info, written by the host */
#define GW_GPA_STATUS 0x2000ull        /* struct gw_guest_status, written by the guest (2 pages) */
#define GW_GPA_GDT 0x4000ull           /* GDT: fixed segments + one TSS descriptor per vCPU */
#define GW_GPA_TSS 0x5000ull           /* GW_MAX_VCPUS TSSs, GW_TSS_STRIDE apart */
#define GW_GPA_IDT 0x6000ull           /* 256 16-byte gates, filled by the guest */
#define GW_GPA_PML4 0x10000ull         /* page tables: PML4, PDPT(s), then PDs (2 MiB pages) */
#define GW_GPA_PT_END 0x80000ull
#define GW_GPA_KSTACKS 0x80000ull      /* per-vCPU CPL0 stacks, GW_KSTACK_SIZE each */
#define GW_GPA_CODE 0x100000ull        /* the guest image is loaded and entered here */
#define GW_GUEST_CODE_MAX (0x200000ull - GW_GPA_CODE)
#define GW_GPA_USTACKS 0x200000ull     /* per-vCPU CPL3 stacks, GW_USTACK_SIZE each */
#define GW_GPA_DATA 0x400000ull        /* guest-private tables (generations), then working set */
#define GW_MIN_MEMORY (8ull << 20)

/* The disk workload (guest/workload_disk.c, vCPU 0 only) has no memory working set; it
 * keeps its driver memory in fixed places the memory workloads never use:
 *   GW_GPA_DISK_RING  64 KiB above the CPL3 stacks: virtqueue 0 (descriptor table, avail
 *                     and used rings) plus the per-request headers and status bytes;
 *   GW_GPA_DISK_GEN   uint32_t generation per block of the tested region (0 = never
 *                     written, GW_DISK_GEN_UNKNOWN = last write failed);
 *   GW_GPA_DISK_BUF   one data buffer of disk_block_bytes per request slot.
 * On-disk block format (little-endian), a pure function of (seed, block, generation):
 *   0 u64 GW_DISK_BLOCK_MAGIC   8 u64 seed   16 u64 block index (units of disk_block_bytes)
 *   24 u32 generation   28 u32 disk_block_bytes   32 u64 checksum   40.. payload words,
 *   word at byte offset o = mix64(key ^ o), key = mix64(mix64(seed ^ GW_DISK_KEY_SALT) ^
 *   mix64(block) ^ (gen << 32)); checksum: h = GW_DISK_SUM_INIT, then h = mix64(h ^ w) for
 *   every u64 word w of the block in order except the checksum's own (mix64 = splitmix64's
 *   finaliser, gw_mix64 in guest/rt.h). */
#define GW_GPA_DISK_RING (GW_GPA_USTACKS + GW_MAX_VCPUS * GW_USTACK_SIZE)
#define GW_DISK_RING_BYTES 0x10000ull
#define GW_GPA_DISK_GEN GW_GPA_DATA
#define GW_DISK_MAX_BLOCKS 65536u
#define GW_GPA_DISK_BUF (GW_GPA_DISK_GEN + 4ull * GW_DISK_MAX_BLOCKS)
#define GW_DISK_GEN_UNKNOWN 0xffffffffu
#define GW_DISK_BLOCK_MAGIC 0x31424b5349445747ull   /* "GWDISKB1" */
#define GW_DISK_KEY_SALT 0x6469736bull             /* "disk" */
#define GW_DISK_SUM_INIT 0x6a09e667f3bcc908ull
#define GW_DISK_HEADER_BYTES 40u

#define GW_MAX_VCPUS 16u
#define GW_TSS_STRIDE 128u
#define GW_KSTACK_SIZE 0x2000ull
#define GW_USTACK_SIZE 0x10000ull

/* RAM above 3 GiB is placed at 4 GiB, leaving the PCI-style hole for MMIO and the LAPIC. */
#define GW_RAM_HOLE_START 0xC0000000ull
#define GW_RAM_HOLE_END 0x100000000ull

/* ---- GDT selectors (the host fills the GDT; the guest only loads the IDT) ---- */
#define GW_SEL_KCODE 0x08
#define GW_SEL_KDATA 0x10
#define GW_SEL_UDATA 0x1b   /* index 3, RPL 3 */
#define GW_SEL_UCODE 0x23   /* index 4, RPL 3 */
#define GW_SEL_TSS0 0x28    /* index 5; vCPU i uses GW_SEL_TSS0 + 16*i */

/* ---- devices ---- */
#define GW_PORT_COM1 0x3f8u
#define GW_PORT_CTL 0x600u         /* 32-bit OUT: event code (enum gw_guest_event) */
#define GW_PORT_CTL_ARG 0x604u     /* 32-bit OUT: argument for the next event */
#define GW_VIRTIO_MMIO_BASE 0xd0000000ull
#define GW_VIRTIO_MMIO_SIZE 0x1000ull
#define GW_VIRTIO_BLK_GSI 5u
#define GW_VIRTIO_NET_MMIO_BASE (GW_VIRTIO_MMIO_BASE + GW_VIRTIO_MMIO_SIZE)
#define GW_VIRTIO_NET_GSI 6u
#define GW_LAPIC_BASE 0xfee00000ull

/* Interrupt vectors. The workload enters CPL0 with `ud2` (see guest/entry.S). */
#define GW_VEC_TIMER 0x20
#define GW_VEC_SPURIOUS 0xff

enum gw_syscall {
    GW_SYS_WAIT_TICK = 1,  /* halt until the next timer tick; returns the tick count */
    GW_SYS_CRASH = 2,      /* tests only: load an empty IDT and fault (a triple fault) */
    GW_SYS_OUTL = 3,       /* outl(port = arg0, value = arg1): CPL3 port I/O is not possible
                              everywhere (under PVM IOPL is not honoured), so ports go via CPL0 */
    GW_SYS_OUTB = 4,       /* outb(port = arg0, value = arg1) */
};

enum gw_guest_event {
    GW_EV_NONE = 0,
    GW_EV_BOOTED = 1,        /* CPL0 set-up done, workload about to start (arg: vcpu) */
    GW_EV_READY = 2,         /* workload initialised its working set (arg: vcpu) */
    GW_EV_VERIFY_ERROR = 3,  /* arg: vcpu; details in the vCPU's counters */
    GW_EV_FATAL = 4,         /* arg: enum gw_guest_error; the guest stops */
    GW_EV_DONE = 5,          /* workload finished (finite workloads only) */
    GW_EV_UNEXPECTED_TRAP = 6, /* arg: vector; the guest stops */
};

enum gw_guest_error {
    GW_ERR_NONE = 0,
    GW_ERR_BAD_BOOTINFO = 1,
    GW_ERR_NO_ROOM = 2,       /* working set does not fit in RAM */
    GW_ERR_DISK = 3,          /* disk workload: device missing or refused */
};

/* GW_WL_TRIPLE_FAULT exists for tests: it makes the guest triple-fault on purpose. */
/* GW_WL_LINUX is host-side only: the VM boots a Linux kernel instead of our guest image. */
enum gw_workload { GW_WL_IDLE = 1, GW_WL_DIRTIER = 2, GW_WL_DISK = 3, GW_WL_TRIPLE_FAULT = 4,
                   GW_WL_LINUX = 5 };
enum gw_pattern { GW_PAT_RANDOM = 1, GW_PAT_TEXT = 2, GW_PAT_SPARSE = 3 };

struct gw_boot_info {
    uint64_t magic;            /* GW_BOOT_MAGIC */
    uint32_t abi_version;      /* GW_ABI_VERSION */
    uint32_t nvcpus;
    uint64_t ram_below_hole;   /* RAM at [0, ram_below_hole) */
    uint64_t ram_above_hole;   /* RAM at [4 GiB, 4 GiB + ram_above_hole) */
    uint32_t workload;         /* enum gw_workload */
    uint32_t pattern;          /* enum gw_pattern */
    uint64_t ws_bytes;         /* working set, split evenly across vCPUs */
    uint64_t rate_bytes_per_s; /* total write rate across vCPUs; 0 = write once, then idle */
    uint64_t seed;
    uint32_t tick_hz;          /* LAPIC timer frequency the guest programs */
    uint32_t lapic_ticks_per_tick; /* LAPIC timer initial count (divide-by-1) for one tick */
    uint32_t verify_pages_per_tick; /* per vCPU; 0 = verifier off */
    uint32_t disk_present;
    uint64_t disk_mmio_base;
    uint32_t disk_gsi;
    uint32_t reserved0;
    uint64_t disk_block_bytes; /* disk workload: bytes per block written (multiple of 512) */
    uint64_t reserved[16];
};

/* Counters one vCPU publishes; one cache line pair each so vCPUs never share a line. */
struct gw_vcpu_counters {
    uint64_t ticks;            /* timer interrupts taken */
    uint64_t pages_written;    /* working-set pages written (each with a new generation) */
    uint64_t bytes_written;
    uint64_t pages_verified;
    uint64_t verify_errors;
    uint64_t verify_passes;    /* complete passes of the verifier over the vCPU's share */
    uint64_t first_error_page; /* index within the working set, valid when verify_errors */
    uint64_t heartbeat;        /* bumped every loop iteration: proves the vCPU runs */
    uint64_t disk_blocks_written;
    uint64_t disk_blocks_read;
    uint64_t disk_verify_errors;
    uint64_t disk_io_errors;
    uint64_t pad[4];
};

struct gw_guest_status {
    uint64_t magic;            /* GW_STATUS_MAGIC once the guest has booted */
    uint32_t abi_version;
    uint32_t fatal_error;      /* enum gw_guest_error, 0 while healthy */
    uint64_t ws_gpa;           /* where the working set starts */
    uint64_t ws_bytes;
    uint64_t gen_table_gpa;    /* uint32_t generation per working-set page */
    uint64_t trap_vector;      /* last unexpected exception: vector, RIP, error code */
    uint64_t trap_rip;
    uint64_t trap_error_code;
    uint64_t reserved[8];
    struct gw_vcpu_counters vcpu[GW_MAX_VCPUS];
};

/* Where the generation table and working set go for a given working set size, so the host
 * can refuse a spec that cannot fit before it starts anything. */
static inline uint64_t gw_abi_align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
static inline uint64_t gw_abi_gen_table_gpa(void) { return GW_GPA_DATA; }
static inline uint64_t gw_abi_ws_gpa(uint64_t ws_bytes)
{
    uint64_t pages = ws_bytes / 4096;
    return gw_abi_align_up(GW_GPA_DATA + pages * 4, 0x200000ull);
}
static inline uint64_t gw_abi_min_ram(uint64_t ws_bytes)
{
    return gw_abi_ws_gpa(ws_bytes) + gw_abi_align_up(ws_bytes, 4096);
}

#endif
