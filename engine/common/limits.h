/* The one table of VM limits. The API (godwitd's CreateVm and PrepareIncoming), the runner
 * (gw_vm_create) and a migration's destination (precopy_dest) all check against these
 * numbers, so that the API refuses exactly what the runner would refuse: a request that
 * passes CreateVm does not fail later at StartVm for its size or shape.
 * engine/vm/vm_config.h applies them (plus the guest spec) in one function. */
#ifndef GW_COMMON_LIMITS_H
#define GW_COMMON_LIMITS_H

#define GW_LIMIT_VM_NAME_MAX 63u               /* [A-Za-z0-9._-], not starting with . or - */
#define GW_LIMIT_MEMORY_MIN (8ull << 20)       /* the guest's fixed layout needs 8 MiB */
#define GW_LIMIT_MEMORY_MAX (64ull << 30)      /* the destination's page bookkeeping is sized for it */
#define GW_LIMIT_MEMORY_STEP (2ull << 20)      /* guest RAM is mapped with 2 MiB pages */
#define GW_LIMIT_VCPUS_MAX 16u                 /* the guest's per-vCPU tables (guest/abi.h) */
/* KVM dirty ring entries per vCPU (engine/vm/dirty_ring.h), a power of two: one 4 KiB page of
 * entries up to KVM's usual maximum. */
#define GW_LIMIT_DIRTY_RING_MIN 256u
#define GW_LIMIT_DIRTY_RING_MAX 65536u
#define GW_LIMIT_GUEST_SPEC_MAX 255u
#define GW_LIMIT_DISK_PATH_MAX 511u               /* also a Linux guest's kernel and initrd paths */
#define GW_LIMIT_CMDLINE_MAX 1024u             /* a Linux guest's command line, printable ASCII; the
                                                * virtio-mmio devices appended must still fit the
                                                * kernel's 2048 (engine/vm/linux_boot.c) */

#define GW_LIMIT_BACKUP_ID_BUF 48u             /* a backup id and its NUL: the API, the catalog and the
                                                * disk's dirty-bitmap base all hold one */

/* VM labels (CreateVmRequest.labels; selected by backup policies): "KEY=VALUE" each. Kept as
 * one string "K=V,K=V" (sorted) in the daemon's record (the buffer holds the most). */
#define GW_LIMIT_VM_LABELS 16u
#define GW_LIMIT_LABEL_KEY_MAX 63u             /* [A-Za-z0-9._/-], starting with a letter or digit */
#define GW_LIMIT_LABEL_VALUE_MAX 63u           /* [A-Za-z0-9._-], may be empty */
#define GW_LIMIT_LABELS_BUF (GW_LIMIT_VM_LABELS * (GW_LIMIT_LABEL_KEY_MAX + GW_LIMIT_LABEL_VALUE_MAX + 2))

/* A backup's own throttle (policies): at most this many bytes/s or store writes/s. */
#define GW_LIMIT_BACKUP_RATE_MAX (1ull << 40)
#define GW_LIMIT_BACKUP_OPS_MAX 1000000u

#define GW_LIMIT_CONSOLE_TAIL_MAX (1u << 20)   /* GetVmConsole: bytes of a console log per call */
#define GW_DEFAULT_CONSOLE_TAIL (16u << 10)

/* Backups: the disk's copy-before-write (fleecing) area in the runner's state directory
 * (backup/disk_fleece.c). When the guest overwrites more not-yet-read disk than this during
 * one backup, that backup fails; the guest never waits. */
#define GW_LIMIT_FLEECE_MIN (64ull << 10)
#define GW_LIMIT_FLEECE_DEFAULT (256ull << 20)
#define GW_LIMIT_FLEECE_MAX (1ull << 40)
#define GW_LIMIT_FLEECE_BLOCKS_MAX (1ull << 22)  /* copy-before-write blocks per disk (state: 5 B each) */

/* Backups by write-protect: the memory side buffer, the copies of pages the guest rewrote
 * before the backup read them (engine/dirty/dirty_snapshot.h), in the runner's RAM as they
 * come. When it is full the backup fails, never the guest; before that the backup must write
 * fast enough to stay ahead of it (backup/side_fill.h), whatever that costs the other guests:
 * a larger bound trades the host's RAM for a gentler backup of a guest that rewrites much of
 * its memory (docs/backups.md, "The side buffer's bound"). The default is a quarter of the
 * guest's RAM; more than the guest's RAM is never needed (a page is copied at most once). */
#define GW_LIMIT_SIDE_MIN (1ull << 20)
#define GW_LIMIT_SIDE_MAX (1ull << 40)
#define GW_BACKUP_SIDE_DEFAULT_DIV 4u          /* the default: guest RAM / this */

/* Backups: the adaptive throttle's target for the VMs' block-request p99, in percent of their
 * p99 just before the backup (storage/throttle_ctl.h). Below 101 every interval would read as
 * congested; above 1000 the guests would no longer be protected. */
#define GW_LIMIT_VM_LAT_PCT_MIN 101u
#define GW_LIMIT_VM_LAT_PCT_DEFAULT 110u
#define GW_LIMIT_VM_LAT_PCT_MAX 1000u

/* What a zero (unset) field of CreateVmRequest means. */
#define GW_DEFAULT_MEMORY (256ull << 20)
#define GW_DEFAULT_VCPUS 1u
#define GW_DEFAULT_GUEST "idle:ws=16M"

#endif
