/* The state codecs, on a real KVM VM: a booted VM's full state survives save -> protobuf
 * pack -> unpack -> load into a second VM -> save again, with every register block equal;
 * hostile states (wrong shape, wrong blob sizes, unknown device) are refused with a reason.
 * Skipped (exit 77) where /dev/kvm cannot be opened. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/vm/vm.h"
#include "tests/lib/gw_test.h"

static struct gw_vm *make_vm(unsigned vcpus)
{
    struct gw_vm_config cfg = {.name = "t", .memory_bytes = 32ull << 20, .vcpus = vcpus,
                               .guest_spec = "dirtier:ws=4M,rate=4M", .console_fd = -1};
    struct gw_vm *vm = NULL;
    char err[256];
    if (gw_vm_create(&cfg, &vm, err, sizeof err)) { fprintf(stderr, "create: %s\n", err); return NULL; }
    return vm;
}

static bool blob_eq(const Godwit__V1__KvmBlob *a, const Godwit__V1__KvmBlob *b)
{
    if (!a || !b) return a == b;
    bool eq = a->size == b->size && a->data.len == b->data.len && !memcmp(a->data.data, b->data.data, a->data.len);
    if (!eq && a->data.len == b->data.len) {
        /* Which bytes: a failure that shows up once in many runs must say what it was. */
        for (size_t i = 0; i < a->data.len; i++)
            if (a->data.data[i] != b->data.data[i])
                fprintf(stderr, "  blob byte %zu: %02x saved, %02x after the round trip\n", i, a->data.data[i],
                        b->data.data[i]);
    }
    return eq;
}

GW_TEST(state_round_trip_through_protobuf)
{
    if (!gw_test_have_kvm()) { gw_test_skip("no /dev/kvm"); return; }
    struct gw_vm *a = make_vm(2), *b = make_vm(2);
    REQUIRE(a && b);
    char err[256];
    REQUIRE(gw_vm_boot(a, err, sizeof err) == 0);
    REQUIRE(gw_vm_start(a) == 0);
    CHECK_EQ(gw_vm_wait_ready(a, 20000), 0);
    REQUIRE(gw_vm_pause(a) == 0);

    Godwit__V1__VmState *s1 = NULL;
    REQUIRE(gw_vm_save_state(a, &s1) == 0);
    CHECK_EQ(s1->n_vcpus, 2);
    CHECK(s1->vcpus[0]->n_msrs > 10);
    CHECK(s1->vcpus[0]->xsave != NULL || s1->vcpus[0]->fpu != NULL);
    CHECK_EQ(s1->n_devices, 2);
    size_t len = godwit__v1__vm_state__get_packed_size(s1);
    uint8_t *buf = malloc(len);
    REQUIRE(buf);
    godwit__v1__vm_state__pack(s1, buf);
    Godwit__V1__VmState *u = godwit__v1__vm_state__unpack(NULL, len, buf);
    REQUIRE(u != NULL);
    CHECK_EQ(gw_vm_load_state(b, u, err, sizeof err), 0);

    Godwit__V1__VmState *s2 = NULL;
    REQUIRE(gw_vm_save_state(b, &s2) == 0);
    for (unsigned i = 0; i < 2; i++) {
        const Godwit__V1__VcpuState *x = s1->vcpus[i], *y = s2->vcpus[i];
        CHECK(blob_eq(x->regs, y->regs));
        CHECK(blob_eq(x->sregs, y->sregs));
        CHECK(blob_eq(x->sregs2, y->sregs2));
        CHECK(blob_eq(x->xsave, y->xsave));
        CHECK(blob_eq(x->xcrs, y->xcrs));
        CHECK(blob_eq(x->events, y->events));
        CHECK(blob_eq(x->debugregs, y->debugregs));
        CHECK_EQ(x->mp_state, y->mp_state);
        CHECK_EQ(x->n_msrs, y->n_msrs);
    }
    CHECK(blob_eq(s1->irqchip->ioapic, s2->irqchip->ioapic));
    CHECK(blob_eq(s1->irqchip->pic_master, s2->irqchip->pic_master));

    gw_vm_state_free(s1);
    gw_vm_state_free(s2);
    godwit__v1__vm_state__free_unpacked(u, NULL);
    free(buf);
    gw_vm_destroy(a);
    gw_vm_destroy(b);
}

GW_TEST(hostile_states_are_refused)
{
    if (!gw_test_have_kvm()) { gw_test_skip("no /dev/kvm"); return; }
    struct gw_vm *a = make_vm(1), *b = make_vm(1), *c = make_vm(2);
    REQUIRE(a && b && c);
    char err[256];
    REQUIRE(gw_vm_boot(a, err, sizeof err) == 0);
    Godwit__V1__VmState *s = NULL;
    REQUIRE(gw_vm_save_state(a, &s) == 0);

    /* A VM of another shape. */
    CHECK_EQ(gw_vm_load_state(c, s, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "vcpus") != NULL);
    /* A format from the future. */
    s->format_version = 900;
    CHECK_EQ(gw_vm_load_state(b, s, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "format") != NULL);
    s->format_version = 100;
    /* A register blob of the wrong size. */
    Godwit__V1__KvmBlob *regs = s->vcpus[0]->regs;
    regs->size -= 8;
    regs->data.len -= 8;
    CHECK_EQ(gw_vm_load_state(b, s, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "regs") != NULL);
    regs->size += 8;
    regs->data.len += 8;
    /* A vCPU id beyond the VM. */
    s->vcpus[0]->id = 5;
    CHECK_EQ(gw_vm_load_state(b, s, err, sizeof err), -EINVAL);
    s->vcpus[0]->id = 0;
    /* A device this VM does not have. */
    char *name = s->devices[0]->name;
    s->devices[0]->name = "nvme7";
    CHECK_EQ(gw_vm_load_state(b, s, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "nvme7") != NULL);
    s->devices[0]->name = name;
    /* And the untouched state still loads. */
    CHECK_EQ(gw_vm_load_state(b, s, err, sizeof err), 0);
    gw_vm_state_free(s);
    gw_vm_destroy(a);
    gw_vm_destroy(b);
    gw_vm_destroy(c);
}
