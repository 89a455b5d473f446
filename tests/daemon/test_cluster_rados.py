#!/usr/bin/python3
"""The cluster registry on a real throw-away Ceph cluster (scripts/ceph-cluster, bluestore so
that its OSD can stop and come back): three godwitd with `cluster = rados:godwit/NS` see each
other (their records are omap keys of one RADOS object), a change of one host is announced
to the others at once by watch/notify, an evacuation goes through the RADOS registry, a
killed daemon's host is shown down, and a Ceph outage is a clear error within a bounded time
while each daemon goes on serving its local VMs (and the registry works again once Ceph is
back).

    /usr/bin/python3 tests/daemon/test_cluster_rados.py [BUILD_DIR] [-k NAME]

Skips (77) without python3-grpcio/grpc-tools or Ceph's daemons; without a usable /dev/kvm only
the registry's own tests run (@no_vm), not the ones that put VMs in it."""
import os
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwd  # noqa: E402
from gwd import AUTH, grpc, wait_for  # noqa: E402
import test_cluster as tc  # noqa: E402  (code_of, error_reason; its tests are not collected here)

api, api_grpc, hpb, hgrpc = gwd.stubs()
BIN = gwd.build_dir()
HERE = os.path.dirname(os.path.abspath(__file__))
CEPH = os.path.join(HERE, "..", "..", "scripts", "ceph-cluster")
MIB = 1 << 20
ST = api.EvacuationStep
OBJECT = "godwit.cluster.hosts"


def ceph(verb, *args):
    r = subprocess.run([CEPH, verb] + list(args), capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError("ceph-cluster %s failed:\n%s%s" % (verb, r.stdout, r.stderr))
    return r.stdout


class RadosClusterTest(unittest.TestCase):
    """host-a, host-b, host-c on one RADOS registry. The outage test runs last (z_)."""

    @classmethod
    def setUpClass(cls):
        cls.conf = ceph("start", "--store", "bluestore", "--size", "2G").strip().splitlines()[-1]
        cls.ns = "reg%d" % (int(time.time() * 1000) % 10**8)
        cls.hosts = {}
        cls.metrics_port = gwd.free_port()
        try:
            for name in ("host-a", "host-b", "host-c"):
                extra = "metrics_listen = 127.0.0.1:%d\n" % cls.metrics_port if name == "host-a" else ""
                cls.hosts[name] = gwd.Daemon(BIN, name, extra=(
                    "cluster_registry = rados:godwit/%s\ncluster_ceph_conf = %s\ncapacity_memory = 1G\n"
                    "capacity_vcpus = 8\nmigration_port = %d\nmax_migrations = 4\n%s"
                    % (cls.ns, cls.conf, gwd.free_port(), extra)))
        except BaseException:
            cls.tearDownClass()
            raise
        cls.a, cls.b, cls.c = cls.hosts["host-a"], cls.hosts["host-b"], cls.hosts["host-c"]

    @classmethod
    def tearDownClass(cls):
        try:
            for d in cls.hosts.values():
                d.cleanup()
        finally:
            ceph("stop", cls.conf)

    def tearDown(self):
        for d in self.hosts.values():
            if d.proc.poll() is not None:
                continue
            for v in self.call(d, "ListVms", api.ListVmsRequest()).vms:
                wait_for(lambda: tc.code_of(lambda: self.call(d, "DeleteVm", api.DeleteVmRequest(name=v.name, force=True)))[0]
                         in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND), 20, 0.2)
            tc.code_of(lambda: self.call(d, "ExitMaintenance", api.ExitMaintenanceRequest()))

    def call(self, d, method, req, timeout=30):
        return getattr(d.stub, method)(req, metadata=AUTH, timeout=timeout)

    def create(self, d, name, mem=64):
        return self.call(d, "CreateVm", api.CreateVmRequest(name=name, memory_bytes=mem * MIB, vcpus=1, start=True,
                                                            guest="dirtier:ws=8M,rate=4M")).vm

    def hosts_by_name(self, d=None):
        return {h.name: h for h in self.call(d or self.a, "ListHosts", api.ListHostsRequest()).hosts}

    def where(self, name):
        return [d.name for d in self.hosts.values() if d.proc.poll() is None
                for v in self.call(d, "ListVms", api.ListVmsRequest()).vms if v.name == name and v.state == api.Vm.RUNNING]

    def announcements(self):
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("godwit_cluster_announcements_total "):
                    return int(line.split()[1])
        raise AssertionError("no godwit_cluster_announcements_total")

    def omap_keys(self):
        r = subprocess.run(["rados", "-c", self.conf, "-p", "godwit", "-N", self.ns, "listomapkeys", OBJECT],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return sorted(r.stdout.split())

    # ------------------------------------------------------------------------------------

    # The registry itself needs no VM: these run on every machine with Ceph (@no_vm). The
    # tests after them put VMs in it.

    @gwd.no_vm
    def test_hosts_see_each_other(self):
        for d in self.hosts.values():       # every host answers for the whole registry
            self.assertTrue(wait_for(lambda: len(self.hosts_by_name(d)) == 3, 10), self.hosts_by_name(d))
            hosts = self.hosts_by_name(d)
            for name, h in hosts.items():
                self.assertFalse(h.down, name)
                self.assertLess(h.heartbeat_age_ms, 3000)
                self.assertEqual(h.api_address, self.hosts[name].addr)
                self.assertTrue(h.migration_address.startswith("127.0.0.1:"))
                self.assertEqual((h.memory_bytes, h.vcpus, h.state), (1 << 30, 8, api.ClusterHost.ACTIVE))
        # The records live in Ceph: one omap key per host on the registry's object.
        self.assertEqual(self.omap_keys(), ["host-a", "host-b", "host-c"])

    @gwd.no_vm
    def test_change_is_announced_at_once(self):
        before = self.announcements()
        # host-b holds no VM: an evacuation takes it straight to maintenance.
        t0 = time.monotonic()
        self.call(self.b, "EvacuateHost", api.EvacuateHostRequest(policy=api.EvacuationPolicy()))
        self.assertTrue(wait_for(lambda: self.hosts_by_name()["host-b"].state == api.ClusterHost.MAINTENANCE, 5, 0.02))
        seen_after = time.monotonic() - t0
        self.assertTrue(wait_for(lambda: self.announcements() > before, 5), "no notify reached host-a")
        self.assertLess(seen_after, 1.0)     # well before the next heartbeat would matter
        self.call(self.b, "ExitMaintenance", api.ExitMaintenanceRequest())
        self.assertTrue(wait_for(lambda: self.hosts_by_name()["host-b"].state == api.ClusterHost.ACTIVE, 5, 0.02))

    @gwd.no_vm
    def test_killed_daemon_is_down(self):
        self.c.stop(signal.SIGKILL)
        try:
            self.assertTrue(wait_for(lambda: self.hosts_by_name()["host-c"].down, 12, 0.5))
            self.assertGreater(self.hosts_by_name(self.b)["host-c"].heartbeat_age_ms, 5000)
            self.assertFalse(self.hosts_by_name()["host-b"].down)
        finally:
            self.c.start()
        self.assertTrue(wait_for(lambda: not self.hosts_by_name()["host-c"].down, 8, 0.5))

    @gwd.no_vm
    def test_y_registry_outage(self):
        """Ceph down: the registry is a clear error within a bounded time, the daemon's own
        answers stay immediate, and all comes back with Ceph (before test_z, which repeats it
        with a running guest)."""
        ceph("osd-stop", self.conf)
        try:
            t0 = time.monotonic()
            got, why = tc.code_of(lambda: self.call(self.a, "ListHosts", api.ListHostsRequest()))
            took = time.monotonic() - t0
            self.assertEqual(got, grpc.StatusCode.UNAVAILABLE, why)
            self.assertIn("did not answer in time", why)
            self.assertLess(took, 12)
            t0 = time.monotonic()
            self.call(self.a, "ListVms", api.ListVmsRequest(), timeout=3)
            self.assertLess(time.monotonic() - t0, 1.5)
            self.assertTrue(wait_for(lambda: "cannot publish this host's record" in self.a.logtext(), 15))
        finally:
            ceph("osd-start", self.conf)
        self.assertTrue(wait_for(lambda: tc.code_of(lambda: self.hosts_by_name())[0] == grpc.StatusCode.OK, 60, 1))
        self.assertTrue(wait_for(lambda: not any(h.down for h in self.hosts_by_name().values()), 30, 0.5),
                        self.hosts_by_name())

    def test_vm_in_its_host_record(self):
        self.create(self.a, "seen")
        self.assertTrue(wait_for(lambda: "seen" in [v.name for v in self.hosts_by_name(self.c)["host-a"].vms], 5))

    def test_nothing_is_placed_on_a_host_in_maintenance(self):
        self.call(self.b, "EvacuateHost", api.EvacuateHostRequest(policy=api.EvacuationPolicy()))
        self.assertTrue(wait_for(lambda: self.hosts_by_name()["host-b"].state == api.ClusterHost.MAINTENANCE, 5, 0.02))
        self.create(self.a, "nowhere")
        got, why = tc.code_of(lambda: self.call(self.a, "MigrateVm", api.MigrateVmRequest(vm="nowhere", destination=self.b.addr)))
        self.assertEqual(got, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("maintenance", why)
        self.call(self.b, "ExitMaintenance", api.ExitMaintenanceRequest())
        self.assertTrue(wait_for(lambda: self.hosts_by_name()["host-b"].state == api.ClusterHost.ACTIVE, 5, 0.02))

    def test_evacuation_through_rados(self):
        for n, mem in (("ev1", 64), ("ev2", 96), ("ev3", 64)):
            self.create(self.a, n, mem=mem)
        plan = self.call(self.a, "EvacuateHost", api.EvacuateHostRequest(dry_run=True, policy=api.EvacuationPolicy())).plan
        self.assertEqual(sorted(s.vm for s in plan), ["ev1", "ev2", "ev3"])
        job = self.call(self.a, "EvacuateHost", api.EvacuateHostRequest(policy=api.EvacuationPolicy(max_outbound=2))).job
        final = list(self.a.stub.WatchJob(api.WatchJobRequest(id=job.id), metadata=AUTH, timeout=180))[-1].job
        self.assertEqual(final.state, api.Job.SUCCEEDED, final.error)
        for s in final.steps:
            self.assertEqual(s.state, ST.MOVED, s.error)
            self.assertIn(s.destination_host, ("host-b", "host-c"))
            self.assertTrue(wait_for(lambda: self.where(s.vm) == [s.destination_host], 15), (s.vm, self.where(s.vm)))
            vm = self.call(self.hosts[s.destination_host], "GetVm", api.GetVmRequest(name=s.vm)).vm
            self.assertEqual((vm.origin_host, vm.counters.verify_errors), ("host-a", 0))
        # The other hosts read host-a's new state from Ceph.
        self.assertEqual(self.hosts_by_name(self.c)["host-a"].state, api.ClusterHost.MAINTENANCE)

    def test_no_migration_to_a_down_host(self):
        self.c.stop(signal.SIGKILL)
        try:
            self.assertTrue(wait_for(lambda: self.hosts_by_name()["host-c"].down, 12, 0.5))
            self.create(self.a, "avoid")
            self.assertEqual(tc.error_reason(lambda: self.call(self.a, "MigrateVm", api.MigrateVmRequest(
                vm="avoid", destination=self.c.addr)))[1], "HOST_DOWN")
            plan = self.call(self.a, "EvacuateHost", api.EvacuateHostRequest(dry_run=True, policy=api.EvacuationPolicy())).plan
            self.assertEqual([(s.vm, s.destination_host) for s in plan], [("avoid", "host-b")])
        finally:
            self.c.start()
        self.assertTrue(wait_for(lambda: not self.hosts_by_name()["host-c"].down, 8, 0.5))

    def test_z_ceph_outage(self):
        self.create(self.a, "local")
        pids = self.a.runner_pids()
        self.assertTrue(pids)
        ceph("osd-stop", self.conf)
        try:
            code, reason = tc.error_reason(lambda: self.call(self.a, "MigrateVm", api.MigrateVmRequest(
                vm="local", destination=self.b.addr)))
            self.assertEqual((code, reason), (grpc.StatusCode.UNAVAILABLE, "REGISTRY_UNAVAILABLE"))
            # The daemon still serves its local VMs, at once, and the guest runs on.
            t0 = time.monotonic()
            vm = self.call(self.a, "GetVm", api.GetVmRequest(name="local"), timeout=3).vm
            self.assertLess(time.monotonic() - t0, 1.5)
            self.assertEqual(vm.state, api.Vm.RUNNING)
            self.call(self.a, "StopVm", api.StopVmRequest(name="local"), timeout=30)
            self.call(self.a, "StartVm", api.StartVmRequest(name="local"), timeout=30)
            self.assertTrue(wait_for(lambda: self.call(self.a, "GetVm", api.GetVmRequest(name="local")).vm.state
                                     == api.Vm.RUNNING, 10))
        finally:
            ceph("osd-start", self.conf)
        # Ceph back: the registry answers again and the heartbeats resume.
        self.assertTrue(wait_for(lambda: tc.code_of(lambda: self.hosts_by_name())[0] == grpc.StatusCode.OK, 60, 1))
        self.assertTrue(wait_for(lambda: not any(h.down for h in self.hosts_by_name().values()), 30, 0.5),
                        self.hosts_by_name())


def main():
    global BIN
    if len(sys.argv) > 1 and os.path.isdir(sys.argv[1]):
        BIN = os.path.abspath(sys.argv.pop(1))
    for b in ("godwitd", "godwit-vm"):
        if not os.access(os.path.join(BIN, b), os.X_OK):
            print("SKIP: %s not built in %s" % (b, BIN))
            return gwd.SKIP
    if not shutil.which("ceph-mon") or not shutil.which("ceph-osd") or os.geteuid() != 0:
        print("SKIP: Ceph's daemons (ceph-mon, ceph-osd) and root are needed")
        return gwd.SKIP
    tc.BIN = BIN
    return gwd.run_tests()


if __name__ == "__main__":
    sys.exit(main())
