#!/usr/bin/python3
"""The cluster: three godwitd on loopback sharing a directory registry, with the real grpcio
client. The registry and heartbeats (a stopped host is shown down and avoided), the
evacuation planner's dry run (order, destinations, estimates, blockers before anything
moves), an evacuation within its caps streamed by WatchJob, cancel mid-drain, maintenance
states, and a source daemon killed with SIGKILL mid-evacuation that resumes from its journal
and moves no VM twice.

    /usr/bin/python3 tests/daemon/test_cluster.py [BUILD_DIR] [-k NAME]

Skips (77) without python3-grpcio/grpc-tools or a usable /dev/kvm."""
import os
import json
import shutil
import subprocess
import signal
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwd  # noqa: E402
from gwd import AUTH, code_of, grpc, wait_for  # noqa: E402

api, api_grpc, hpb, hgrpc = gwd.stubs()
BIN = gwd.build_dir()
GUEST = "dirtier:ws=8M,rate=4M"
MIB = 1 << 20
ST = api.EvacuationStep


_RPC = None


def rpc_status_classes():
    """google.rpc.Status and ErrorInfo built at run time (no googleapis protos installed):
    the real protobuf decoder reads the trailer, not a hand-written one."""
    global _RPC
    if _RPC:
        return _RPC
    from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="gw_test/rpc_status.proto", package="google.rpc", syntax="proto3",
                                            dependency=["google/protobuf/any.proto"])
    st = fdp.message_type.add(name="Status")
    st.field.add(name="code", number=1, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    st.field.add(name="message", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    st.field.add(name="details", number=3, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".google.protobuf.Any")
    ei = fdp.message_type.add(name="ErrorInfo")
    ei.field.add(name="reason", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    ei.field.add(name="domain", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(fdp)
    from google.protobuf import message_factory
    get = getattr(message_factory, "GetMessageClass", None) or message_factory.MessageFactory(pool).GetPrototype
    _RPC = (get(pool.FindMessageTypeByName("google.rpc.Status")), get(pool.FindMessageTypeByName("google.rpc.ErrorInfo")))
    return _RPC


def error_reason(fn):
    """(status code, ErrorInfo reason) of a failing call, from grpc-status-details-bin."""
    try:
        fn()
    except grpc.RpcError as e:
        Status, ErrorInfo = rpc_status_classes()
        raw = dict(e.trailing_metadata() or ()).get("grpc-status-details-bin")
        if not raw:
            return e.code(), None
        st = Status.FromString(raw)
        assert st.code == e.code().value[0] and st.message == e.details(), (st, e)
        assert st.details[0].type_url == "type.googleapis.com/google.rpc.ErrorInfo", st
        info = ErrorInfo.FromString(st.details[0].value)
        assert info.domain == "godwit", info
        return e.code(), info.reason
    return grpc.StatusCode.OK, None


def reflection_modules(out):
    """The reflection protocol's own Python modules, generated into out (the only schema a
    client without our .proto files needs): {"v1": (pb2, pb2_grpc), "v1alpha": (...)}."""
    import importlib
    from grpc_tools import protoc
    os.makedirs(os.path.join(out, "r"), exist_ok=True)
    mods = {}
    for ver in ("v1", "v1alpha"):
        shutil.copy(os.path.join(gwd.ROOT, "proto/grpc/reflection", ver, "reflection.proto"),
                    os.path.join(out, "r", "reflection_%s.proto" % ver))
        if protoc.main(["protoc", "-I" + out, "--python_out=" + out, "--grpc_python_out=" + out,
                        "r/reflection_%s.proto" % ver]) != 0:
            raise AssertionError("protoc failed on the reflection protocol")
    if out not in sys.path:
        sys.path.insert(0, out)
    for ver in ("v1", "v1alpha"):
        mods[ver] = (importlib.import_module("r.reflection_%s_pb2" % ver),
                     importlib.import_module("r.reflection_%s_pb2_grpc" % ver))
    return mods


class ClusterTest(unittest.TestCase):
    """host-a, host-b, host-c of one registry; each test leaves the cluster as it found it
    (every host active, no VM anywhere)."""

    @classmethod
    def setUpClass(cls):
        cls.reg = tempfile.mkdtemp(prefix="gw-cluster-")
        cls.hosts = {}
        cls.metrics_port = gwd.free_port()
        for name, mem in (("host-a", "2G"), ("host-b", "1G"), ("host-c", "1G")):
            extra = "metrics_listen = 127.0.0.1:%d\n" % cls.metrics_port if name == "host-a" else ""
            # A backup target last (a section of its own): restores are refused on drained hosts.
            target = "[backup_target w]\nstore = dir:%s\n" % os.path.join(cls.reg, "..", os.path.basename(cls.reg) + "-bk")
            cls.hosts[name] = gwd.Daemon(BIN, name, extra="cluster = dir:%s\ncapacity_memory = %s\ncapacity_vcpus = 8\n"
                                         "migration_port = %d\nmax_migrations = 4\n%s%s"
                                         % (cls.reg, mem, gwd.free_port(), extra, target))
        cls.a, cls.b, cls.c = cls.hosts["host-a"], cls.hosts["host-b"], cls.hosts["host-c"]

    @classmethod
    def tearDownClass(cls):
        for d in cls.hosts.values():
            d.cleanup()
        shutil.rmtree(cls.reg, ignore_errors=True)

    def tearDown(self):
        for d in self.hosts.values():
            if d.proc.poll() is not None:
                continue
            for v in self.call(d, "ListVms", api.ListVmsRequest()).vms:
                # A VM still arriving is busy for a moment.
                wait_for(lambda: code_of(lambda: self.call(d, "DeleteVm", api.DeleteVmRequest(name=v.name, force=True)))[0]
                         in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND), 20, 0.2)
            code_of(lambda: self.call(d, "ExitMaintenance", api.ExitMaintenanceRequest()))

    def call(self, d, method, req, timeout=30):
        return getattr(d.stub, method)(req, metadata=AUTH, timeout=timeout)

    def create(self, d, name, mem=64, **kw):
        return self.call(d, "CreateVm", api.CreateVmRequest(name=name, memory_bytes=mem * MIB, vcpus=1, guest=GUEST,
                                                            start=True, **kw)).vm

    def hosts_by_name(self, d=None):
        return {h.name: h for h in self.call(d or self.a, "ListHosts", api.ListHostsRequest()).hosts}

    def where(self, name):
        """The hosts on which a VM named name is RUNNING."""
        out = []
        for d in self.hosts.values():
            if d.proc.poll() is None:
                out += [d.name for v in self.call(d, "ListVms", api.ListVmsRequest()).vms
                        if v.name == name and v.state == api.Vm.RUNNING]
        return out

    def scrape(self):
        """host-a's metrics as {'name{labels}': value}."""
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=10) as r:
            self.assertIn("text/plain", r.headers["Content-Type"])
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def evacuate(self, d, dry=False, request_id="", **policy):
        return self.call(d, "EvacuateHost", api.EvacuateHostRequest(
            dry_run=dry, request_id=request_id, policy=api.EvacuationPolicy(**policy)))

    # ------------------------------------------------------------------------ registry

    def test_registry_lists_hosts(self):
        self.create(self.a, "reg1", mem=96, anti_affinity="db", priority=2)
        self.assertTrue(wait_for(lambda: "reg1" in [v.name for v in self.hosts_by_name()["host-a"].vms], 5))
        hosts = self.hosts_by_name(self.b)      # any host answers for the whole registry
        self.assertEqual(sorted(hosts), ["host-a", "host-b", "host-c"])
        a = hosts["host-a"]
        self.assertEqual(a.state, api.ClusterHost.ACTIVE)
        self.assertFalse(a.down)
        self.assertLess(a.heartbeat_age_ms, 3000)
        self.assertEqual(a.memory_bytes, 2 << 30)
        self.assertEqual(a.vcpus, 8)
        self.assertEqual(a.api_address, self.a.addr)
        self.assertTrue(a.migration_address.startswith("127.0.0.1:"))
        self.assertEqual(a.memory_allocated_bytes, 96 * MIB)
        vm = [v for v in a.vms if v.name == "reg1"][0]
        self.assertEqual((vm.anti_affinity, vm.priority, vm.memory_bytes), ("db", 2, 96 * MIB))
        # Pages by name.
        p1 = self.call(self.a, "ListHosts", api.ListHostsRequest(page_size=2))
        self.assertEqual([h.name for h in p1.hosts], ["host-a", "host-b"])
        self.assertEqual(p1.next_page_token, "host-b")
        p2 = self.call(self.a, "ListHosts", api.ListHostsRequest(page_size=2, page_token=p1.next_page_token))
        self.assertEqual([h.name for h in p2.hosts], ["host-c"])
        self.assertEqual(p2.next_page_token, "")

    def test_stopped_host_is_down_and_avoided(self):
        self.create(self.a, "avoid")
        self.c.stop(signal.SIGKILL)
        try:
            self.assertTrue(wait_for(lambda: self.hosts_by_name()["host-c"].down, 12, 0.5))
            c = self.hosts_by_name()["host-c"]
            self.assertGreater(c.heartbeat_age_ms, 5000)
            # MigrateVm refuses a host that is down, and one that is not registered at all.
            got, why = code_of(lambda: self.call(self.a, "MigrateVm", api.MigrateVmRequest(vm="avoid", destination=self.c.addr)))
            self.assertEqual(got, grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("down", why)
            self.assertEqual(error_reason(lambda: self.call(self.a, "MigrateVm", api.MigrateVmRequest(
                vm="avoid", destination=self.c.addr)))[1], "HOST_DOWN")
            got, why = code_of(lambda: self.call(self.a, "MigrateVm", api.MigrateVmRequest(vm="avoid", destination="127.0.0.1:1")))
            self.assertEqual(got, grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("not a host of the cluster", why)
            # The planner places nothing on it.
            plan = self.evacuate(self.a, dry=True).plan
            self.assertEqual([(s.vm, s.destination_host) for s in plan], [("avoid", "host-b")])
        finally:
            self.c.start()
        self.assertTrue(wait_for(lambda: not self.hosts_by_name()["host-c"].down, 8, 0.5))

    # ------------------------------------------------------------------------ planning

    def test_dry_run_order_and_blockers(self):
        self.create(self.a, "big", mem=256)
        self.create(self.a, "small", mem=64)
        self.create(self.a, "vip", mem=128, priority=5)
        self.create(self.a, "db1", mem=64, anti_affinity="db")
        self.create(self.a, "db2", mem=96, anti_affinity="db")
        r = self.evacuate(self.a, dry=True)
        self.assertEqual(list(r.blockers), [])
        # Priority first, then the smallest first.
        self.assertEqual([s.vm for s in r.plan], ["vip", "db1", "small", "db2", "big"])
        dest = {s.vm: s.destination_host for s in r.plan}
        self.assertNotEqual(dest["db1"], dest["db2"])        # anti-affinity
        self.assertTrue(set(dest.values()) <= {"host-b", "host-c"})
        for s in r.plan:
            self.assertEqual(s.destination, self.hosts[s.destination_host].addr)
            self.assertGreaterEqual(s.estimated_bytes, s.memory_bytes)
            self.assertGreater(s.estimated_ms, 0)
        self.assertFalse(r.HasField("job"))
        self.assertEqual(self.hosts_by_name()["host-a"].state, api.ClusterHost.ACTIVE)   # nothing changed

        # A VM that fits nowhere: a clear blocker, and a real run refuses before anything moves.
        self.create(self.a, "huge", mem=1536)
        r = self.evacuate(self.a, dry=True)
        self.assertEqual([(b.vm, b.reason) for b in r.blockers], [("huge", "NO_CAPACITY")])
        got, why = code_of(lambda: self.evacuate(self.a))
        self.assertEqual(got, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("NO_CAPACITY", why)
        self.assertEqual(error_reason(lambda: self.evacuate(self.a)), (grpc.StatusCode.FAILED_PRECONDITION, "NO_CAPACITY"))
        # A plain error carries no details.
        self.assertEqual(error_reason(lambda: self.call(self.a, "GetVm", api.GetVmRequest(name="nope"))),
                         (grpc.StatusCode.NOT_FOUND, None))
        self.assertEqual(self.hosts_by_name()["host-a"].state, api.ClusterHost.ACTIVE)
        self.assertEqual(self.where("big"), ["host-a"])
        self.assertEqual(len(self.call(self.a, "ListJobs", api.ListJobsRequest(state=api.Job.RUNNING)).jobs), 0)

    # ------------------------------------------------------------------------ evacuation

    def test_busy_vm_is_a_blocker(self):
        # A VM with a job of its own in flight (here a slow migration; a backup is the same)
        # is a VM_BUSY blocker of the dry run, and a real run refuses before anything moves.
        self.create(self.a, "busy1", mem=64)
        self.create(self.a, "idle1", mem=64)
        job = self.call(self.a, "MigrateVm", api.MigrateVmRequest(vm="busy1", destination=self.b.addr, policy=api.MigrationPolicy(
            bandwidth_limit_bytes_per_s=1 * MIB))).job
        try:
            r = self.evacuate(self.a, dry=True)
            self.assertEqual([(b.vm, b.reason) for b in r.blockers], [("busy1", "VM_BUSY")])
            self.assertIn(job.id, r.blockers[0].message)
            self.assertIn("MIGRATE job in progress", r.blockers[0].message)
            self.assertEqual([s.vm for s in r.plan if s.destination_host], ["idle1"])
            self.assertEqual(error_reason(lambda: self.evacuate(self.a)), (grpc.StatusCode.FAILED_PRECONDITION, "VM_BUSY"))
            self.assertEqual(self.hosts_by_name()["host-a"].state, api.ClusterHost.ACTIVE)
            self.assertEqual(self.where("idle1"), ["host-a"])
        finally:
            self.call(self.a, "CancelJob", api.CancelJobRequest(id=job.id))
        final = list(self.a.stub.WatchJob(api.WatchJobRequest(id=job.id), metadata=AUTH, timeout=60))[-1].job
        self.assertEqual(final.state, api.Job.CANCELLED)
        # The job over, the same VM plans again.
        self.assertTrue(wait_for(lambda: not self.evacuate(self.a, dry=True).blockers, 15, 0.2))


    def test_evacuate_within_caps(self):
        names = ["e1", "e2", "e3", "e4"]
        for i, n in enumerate(names):
            self.create(self.a, n, mem=64 + 16 * i)
        r = self.evacuate(self.a, request_id="evac-1", max_outbound=2, max_inbound=1)
        job = r.job
        self.assertEqual(job.kind, api.Job.EVACUATE)
        self.assertEqual([s.vm for s in job.steps], names)
        # A retry with the same request_id is the same job, not a second evacuation.
        self.assertEqual(self.evacuate(self.a, request_id="evac-1", max_outbound=2).job.id, job.id)
        self.assertEqual(self.hosts_by_name()["host-a"].state, api.ClusterHost.DRAINING)
        self.assertEqual(error_reason(lambda: self.create(self.a, "latecomer")),
                         (grpc.StatusCode.FAILED_PRECONDITION, "HOST_NOT_ACTIVE"))
        phases = {}
        events = list(self.a.stub.WatchJob(api.WatchJobRequest(id=job.id), metadata=AUTH, timeout=180))
        for e in events:
            for s in e.job.steps:
                phases.setdefault(s.vm, set()).add(s.phase)
        final = events[-1].job
        self.assertEqual(final.state, api.Job.SUCCEEDED, final.error)
        for s in final.steps:
            self.assertEqual(s.state, ST.MOVED, "%s: %s" % (s.vm, s.error))
            self.assertIn("moved", phases[s.vm])
            self.assertTrue(phases[s.vm] & {"prepare", "setup", "precopy", "queued"}, phases[s.vm])
            self.assertGreater(s.actual_ms, 0)
            self.assertGreater(s.sent_bytes, 0)
            self.assertGreaterEqual(s.round, 1)
        self.assertTrue(any(len(p) > 2 for p in phases.values()), phases)   # phases were streamed
        # Caps: never more than 2 at once from the source, 1 at once into a destination.
        spans = [(s.started_unix_ms, s.finished_unix_ms, s.destination_host) for s in final.steps]
        for t0, _, _ in spans:
            at_once = [sp for sp in spans if sp[0] <= t0 < sp[1]]
            self.assertLessEqual(len(at_once), 2, spans)
            for h in ("host-b", "host-c"):
                self.assertLessEqual(len([sp for sp in at_once if sp[2] == h]), 1, spans)
        self.assertEqual(self.hosts_by_name()["host-a"].state, api.ClusterHost.MAINTENANCE)
        m = self.scrape()
        self.assertGreaterEqual(m['godwit_migrations_total{result="succeeded"}'], 4)
        self.assertEqual(m['godwit_evacuation_vms{state="moved"}'], 4)
        self.assertGreaterEqual(m['godwit_migration_duration_seconds_count'], 4)
        self.assertEqual(m['godwit_migration_downtime_seconds_bucket{le="+Inf"}'], m['godwit_migration_downtime_seconds_count'])
        for s in final.steps:
            self.assertTrue(wait_for(lambda: self.where(s.vm) == [s.destination_host], 10), (s.vm, self.where(s.vm)))
            d = self.hosts[s.destination_host]
            vm = self.call(d, "GetVm", api.GetVmRequest(name=s.vm)).vm
            self.assertEqual(vm.origin_host, "host-a")
            self.assertEqual(vm.counters.verify_errors, 0)
        # In maintenance nothing lands on host-a.
        got, why = code_of(lambda: self.call(self.b, "MigrateVm", api.MigrateVmRequest(vm="e1", destination=self.a.addr))
                           if self.where("e1") == ["host-b"] else
                           self.call(self.c, "MigrateVm", api.MigrateVmRequest(vm="e1", destination=self.a.addr)))
        self.assertEqual(got, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("maintenance", why)
        # Back to active, and every VM goes home.
        r = self.call(self.a, "ExitMaintenance", api.ExitMaintenanceRequest(return_home=True))
        self.assertEqual(r.state, api.ClusterHost.ACTIVE)
        self.assertEqual(sorted(r.returning), names, self.a.logtext()[-2000:])
        self.assertTrue(wait_for(lambda: self.hosts_by_name(self.b)["host-a"].state == api.ClusterHost.ACTIVE, 5))
        for n in names:
            self.assertTrue(wait_for(lambda: self.where(n) == ["host-a"], 60), (n, self.where(n), self.b.logtext()[-3000:]))
            vm = self.call(self.a, "GetVm", api.GetVmRequest(name=n)).vm
            self.assertEqual(vm.counters.verify_errors, 0)
            self.assertEqual(vm.counters.migrations, 2)

    def test_cancel_mid_drain(self):
        for n in ("c1", "c2", "c3"):
            self.create(self.a, n, mem=64)
        # A small bandwidth budget keeps the first child busy for a while.
        job = self.evacuate(self.a, max_outbound=1, bandwidth_budget_bytes_per_s=4 * MIB).job
        self.assertTrue(wait_for(lambda: any(s.state == ST.RUNNING and s.phase not in ("queued", "prepare")
                                             for s in self.call(self.a, "GetJob", api.GetJobRequest(id=job.id)).job.steps), 30))
        # Scraped mid-drain: one VM on its way, two waiting, its bytes still to send.
        m = self.scrape()
        self.assertEqual(m['godwit_evacuation_vms{state="running"}'], 1)
        self.assertEqual(m['godwit_evacuation_vms{state="pending"}'], 2)
        self.assertEqual(m['godwit_host_state{state="draining"}'], 1)
        remaining = [k for k in m if k.startswith("godwit_vm_migration_data_remaining_bytes{")]
        self.assertEqual(len(remaining), 1, m)
        before = m['godwit_migrations_total{result="cancelled"}']
        self.call(self.a, "CancelJob", api.CancelJobRequest(id=job.id))
        final = list(self.a.stub.WatchJob(api.WatchJobRequest(id=job.id), metadata=AUTH, timeout=60))[-1].job
        self.assertEqual(final.state, api.Job.CANCELLED, final.error)
        self.assertEqual([s.state for s in final.steps], [ST.CANCELLED] * 3, final.steps)
        self.assertEqual(self.hosts_by_name()["host-a"].state, api.ClusterHost.ACTIVE)   # in one step
        m = self.scrape()
        self.assertEqual(m['godwit_migrations_total{result="cancelled"}'], before + 1)
        self.assertEqual(m['godwit_evacuation_vms{state="cancelled"}'], 3)
        for n in ("c1", "c2", "c3"):
            self.assertTrue(wait_for(lambda: self.where(n) == ["host-a"], 10), (n, self.where(n)))

    def test_stalled_vm_aborted_with_reason(self):
        # A guest dirtying 64 MiB/s behind an 8 MiB/s link never converges: the stall detector
        # aborts it with a reason, the other VM still moves, and the parent ends (FAILED).
        self.call(self.a, "CreateVm", api.CreateVmRequest(name="calm", memory_bytes=32 * MIB, vcpus=1, start=True,
                                                         guest="dirtier:ws=4M,rate=1M"))
        self.call(self.a, "CreateVm", api.CreateVmRequest(name="hot", memory_bytes=32 * MIB, vcpus=1, start=True,
                                                         guest="dirtier:ws=24M,rate=64M,pattern=random"))
        job = self.evacuate(self.a, max_outbound=2, max_inbound=2, stall_timeout_s=2,
                            migration=api.MigrationPolicy(mode=api.MigrationPolicy.PRECOPY,
                                                          bandwidth_limit_bytes_per_s=8 * MIB, max_rounds=1000)).job
        final = list(self.a.stub.WatchJob(api.WatchJobRequest(id=job.id), metadata=AUTH, timeout=180))[-1].job
        self.assertEqual(final.state, api.Job.FAILED)
        steps = {s.vm: s for s in final.steps}
        self.assertEqual(steps["calm"].state, ST.MOVED, steps["calm"].error)
        self.assertEqual(steps["hot"].state, ST.FAILED)
        self.assertEqual(steps["hot"].reason, "MIGRATION_NOT_CONVERGING", steps["hot"])
        self.assertIn("stalled: remaining bytes not falling", steps["hot"].error)
        self.assertEqual(final.reason, "MIGRATION_NOT_CONVERGING")
        # The host stays draining (the operator decides), and the VM that could not move still runs here.
        self.assertEqual(self.hosts_by_name()["host-a"].state, api.ClusterHost.DRAINING)
        self.assertTrue(wait_for(lambda: self.where("hot") == ["host-a"], 15), self.where("hot"))

    def test_nonconverging_vm_goes_postcopy_by_default(self):
        # The same guest under the default ladder (no mode named: hybrid with auto-converge and
        # a time per GiB): it cannot converge behind its 8 MiB/s link, so it finishes in
        # post-copy, and the host empties.
        self.call(self.a, "CreateVm", api.CreateVmRequest(name="hot2", memory_bytes=32 * MIB, vcpus=1, start=True,
                                                         guest="dirtier:ws=24M,rate=64M,pattern=random"))
        job = self.evacuate(self.a, max_outbound=1, stall_timeout_s=2,
                            migration=api.MigrationPolicy(bandwidth_limit_bytes_per_s=8 * MIB)).job
        final = list(self.a.stub.WatchJob(api.WatchJobRequest(id=job.id), metadata=AUTH, timeout=180))[-1].job
        self.assertEqual(final.state, api.Job.SUCCEEDED, "%s %s" % (final.error, final.steps))
        step = final.steps[0]
        self.assertEqual(step.state, ST.MOVED, step)
        child = self.call(self.a, "GetJob", api.GetJobRequest(id=step.job_id)).job
        self.assertGreater(child.progress.postcopy_ms, 0, child.progress)   # it went on in post-copy
        self.assertEqual(self.hosts_by_name()["host-a"].state, api.ClusterHost.MAINTENANCE)
        self.assertTrue(wait_for(lambda: self.where("hot2") == [step.destination_host], 15), self.where("hot2"))

    def test_sigkill_mid_evacuation_resumes(self):
        names = ["k1", "k2", "k3"]
        for n in names:
            self.create(self.a, n, mem=64)
        job = self.evacuate(self.a, max_outbound=1, bandwidth_budget_bytes_per_s=16 * MIB).job
        # Killed once the first VM has moved and the next one is on its way.
        def in_flight():
            steps = self.call(self.a, "GetJob", api.GetJobRequest(id=job.id)).job.steps
            return (sum(s.state == ST.MOVED for s in steps) >= 1 and
                    any(s.state == ST.RUNNING and s.phase not in ("", "queued") for s in steps))
        self.assertTrue(wait_for(in_flight, 60, 0.02))
        self.a.stop(signal.SIGKILL)
        self.a.start()
        final = list(self.a.stub.WatchJob(api.WatchJobRequest(id=job.id), metadata=AUTH, timeout=120))[-1].job
        self.assertEqual(final.state, api.Job.SUCCEEDED, "%s %s" % (final.error, final.steps))
        log = self.a.logtext()
        self.assertIn("resuming the evacuation from its journal", log)
        # The step in flight at the kill was settled from the registry before anything else.
        self.assertTrue("after the restart: moved" in log or "still here after the restart" in log, log[-3000:])
        for s in final.steps:
            self.assertEqual(s.state, ST.MOVED)
            # Exactly one copy of each VM runs, on its destination.
            self.assertTrue(wait_for(lambda: self.where(s.vm) == [s.destination_host], 15), (s.vm, self.where(s.vm)))
        # One migration job per VM on the source: none was migrated twice.
        jobs = self.call(self.a, "ListJobs", api.ListJobsRequest()).jobs
        for n in names:
            ok = [j for j in jobs if j.vm == n and j.kind == api.Job.MIGRATE and j.state == api.Job.SUCCEEDED]
            self.assertLessEqual(len(ok), 1, ok)

    @gwd.no_vm
    def test_metrics_endpoint_refuses_the_rest(self):
        import socket
        import urllib.error
        import urllib.request
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen("http://127.0.0.1:%d/" % self.metrics_port, timeout=10)
        self.assertEqual(cm.exception.code, 404)
        # A silent client is dropped after its 2 s, an endless header at 4 KiB; a scrape still works.
        s = socket.create_connection(("127.0.0.1", self.metrics_port), timeout=10)
        t0 = time.monotonic()
        self.assertEqual(s.recv(10), b"")
        self.assertLess(time.monotonic() - t0, 5)
        s.close()
        s = socket.create_connection(("127.0.0.1", self.metrics_port), timeout=10)
        s.sendall(b"GET /metrics HTTP/1.0\r\nX: " + b"a" * 8000)
        self.assertIn(s.recv(100)[:12], (b"", b"HTTP/1.0 200"))
        s.close()
        self.assertIn('godwit_migrations_total{result="succeeded"}', self.scrape())

    def test_pagination_and_safe_retry(self):
        for n in ("p3", "p1", "p2"):
            self.create(self.a, n, mem=32)
        seen, token = [], ""
        while True:
            r = self.call(self.a, "ListVms", api.ListVmsRequest(page_size=2, page_token=token))
            self.assertLessEqual(len(r.vms), 2)
            seen += [v.name for v in r.vms]
            token = r.next_page_token
            if not token:
                break
        self.assertEqual(seen, ["p1", "p2", "p3"])
        # MigrateVm with a request_id: the retry is the same job, not a second migration.
        j1 = self.call(self.a, "MigrateVm", api.MigrateVmRequest(vm="p1", destination=self.b.addr, request_id="mig-p1")).job
        j2 = self.call(self.a, "MigrateVm", api.MigrateVmRequest(vm="p1", destination=self.b.addr, request_id="mig-p1")).job
        self.assertEqual((j1.id, j2.request_id), (j2.id, "mig-p1"))
        final = list(self.a.stub.WatchJob(api.WatchJobRequest(id=j1.id), metadata=AUTH, timeout=60))[-1].job
        self.assertEqual(final.state, api.Job.SUCCEEDED, final.error)
        self.assertTrue(wait_for(lambda: self.where("p1") == ["host-b"], 10))
        # Even after it ended (the VM is gone from here), the retry answers with the job.
        self.assertEqual(self.call(self.a, "MigrateVm", api.MigrateVmRequest(vm="p1", destination=self.b.addr,
                                                                             request_id="mig-p1")).job.id, j1.id)
        # Jobs page by id, oldest first.
        all_jobs = [j.id for j in self.call(self.a, "ListJobs", api.ListJobsRequest()).jobs]
        paged, token = [], ""
        while True:
            r = self.call(self.a, "ListJobs", api.ListJobsRequest(page_size=3, page_token=token))
            paged += [j.id for j in r.jobs]
            token = r.next_page_token
            if not token:
                break
        self.assertEqual(paged, all_jobs)
        got, _ = code_of(lambda: self.call(self.a, "ListJobs", api.ListJobsRequest(page_token="job-nope")))
        self.assertEqual(got, grpc.StatusCode.INVALID_ARGUMENT)

    # ------------------------------------------------------------------------ reflection

    def test_reflection_without_proto_files(self):
        """A client that has only the reflection protocol: it lists the services, fetches the
        API's schema from the daemon, and calls GetHost with messages built from it."""
        from google.protobuf import descriptor_pb2, descriptor_pool
        try:
            from google.protobuf import message_factory
            get_class = getattr(message_factory, "GetMessageClass", None)
        except ImportError:  # pragma: no cover
            get_class = None
        out = tempfile.mkdtemp(prefix="gw-refl-")
        try:
            for ver, (pb, pbg) in reflection_modules(out).items():
                stub = pbg.ServerReflectionStub(self.a.channel)

                def ask(**kw):
                    return list(stub.ServerReflectionInfo(iter([pb.ServerReflectionRequest(**kw)]), metadata=AUTH,
                                                          timeout=10))[0]
                names = [s.name for s in ask(list_services="").list_services_response.service]
                self.assertIn("godwit.v1.Godwit", names)
                self.assertIn("grpc.health.v1.Health", names)
                self.assertIn("grpc.reflection.%s.ServerReflection" % ver, names)
                r = ask(file_containing_symbol="godwit.v1.Godwit.GetHost")
                files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                         for b in r.file_descriptor_response.file_descriptor_proto]
                self.assertEqual(files[0].name, "godwit/v1/api.proto")
                for sym in ("godwit.v1.Vm.State", "godwit.v1.ClusterHost", "godwit.v1.GodwitPeer"):
                    self.assertTrue(ask(file_containing_symbol=sym).file_descriptor_response.file_descriptor_proto, sym)
                self.assertEqual(ask(file_containing_symbol="godwit.v1.Nope").error_response.error_code,
                                 grpc.StatusCode.NOT_FOUND.value[0])
                got = ask(file_by_filename="godwit/v1/daemon.proto").file_descriptor_response.file_descriptor_proto
                self.assertEqual([descriptor_pb2.FileDescriptorProto.FromString(b).name for b in got],
                                 ["godwit/v1/daemon.proto", "godwit/v1/api.proto", "godwit/v1/backup_api.proto"])   # with its imports
            # A call from the fetched schema alone.
            pool = descriptor_pool.DescriptorPool()
            for f in files:
                pool.Add(f)
            method = pool.FindServiceByName("godwit.v1.Godwit").methods_by_name["GetHost"]
            if get_class:
                req_cls, resp_cls = get_class(method.input_type), get_class(method.output_type)
            else:
                fac = message_factory.MessageFactory(pool)
                req_cls, resp_cls = fac.GetPrototype(method.input_type), fac.GetPrototype(method.output_type)
            call = self.a.channel.unary_unary("/godwit.v1.Godwit/GetHost", request_serializer=req_cls.SerializeToString,
                                              response_deserializer=resp_cls.FromString)
            self.assertEqual(call(req_cls(), metadata=AUTH, timeout=10).hostname, "host-a")
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def test_reflection_one_stream_many_questions(self):
        """As grpcurl does: one ServerReflectionInfo stream, each question sent only once the
        previous answer came back (a server that waited for the half-close would hang here),
        with grpcio's own HTTP/2 client; the half-close then ends the call with OK."""
        import queue
        out = tempfile.mkdtemp(prefix="gw-refl-")
        try:
            for ver, (pb, pbg) in reflection_modules(out).items():
                stub = pbg.ServerReflectionStub(self.a.channel)
                q = queue.Queue()

                def requests():
                    while True:
                        r = q.get()
                        if r is None:
                            return
                        yield r
                stream = stub.ServerReflectionInfo(requests(), metadata=AUTH, timeout=20)
                questions = [pb.ServerReflectionRequest(list_services=""),
                             pb.ServerReflectionRequest(file_containing_symbol="godwit.v1.Godwit.GetHost"),
                             pb.ServerReflectionRequest(file_by_filename="godwit/v1/daemon.proto"),
                             pb.ServerReflectionRequest(file_containing_symbol="godwit.v1.Nope"),
                             pb.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health")]
                answers = []
                for qn in questions:
                    q.put(qn)
                    answers.append(next(stream))     # the deadline fails the test if it never comes
                    self.assertEqual(answers[-1].original_request, qn)
                self.assertIn("godwit.v1.Godwit", [x.name for x in answers[0].list_services_response.service])
                self.assertTrue(answers[1].file_descriptor_response.file_descriptor_proto)
                self.assertEqual(len(answers[2].file_descriptor_response.file_descriptor_proto), 3)   # daemon.proto and its two imports
                self.assertEqual(answers[3].error_response.error_code, grpc.StatusCode.NOT_FOUND.value[0])
                self.assertTrue(answers[4].file_descriptor_response.file_descriptor_proto)
                q.put(None)                           # half-close
                self.assertEqual(list(stream), [])
                self.assertEqual(stream.code(), grpc.StatusCode.OK)
                # Several questions sent at once, before any answer is read: answered in order.
                many = [pb.ServerReflectionRequest(file_containing_symbol=sym) for sym in
                        ("godwit.v1.Vm", "godwit.v1.Nope", "godwit.v1.ClusterHost")] * 10
                got = list(stub.ServerReflectionInfo(iter(many), metadata=AUTH, timeout=20))
                self.assertEqual([g.original_request for g in got], many)
                # No question at all: a clean end. A message that does not parse ends the call.
                self.assertEqual(list(stub.ServerReflectionInfo(iter([]), metadata=AUTH, timeout=10)), [])
                raw = self.a.channel.stream_stream("/grpc.reflection.%s.ServerReflection/ServerReflectionInfo" % ver)
                with self.assertRaises(grpc.RpcError) as cm:
                    list(raw(iter([pb.ServerReflectionRequest(list_services="").SerializeToString(), b"\xff\xff\xff"]),
                             metadata=AUTH, timeout=10))
                self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        finally:
            shutil.rmtree(out, ignore_errors=True)

    # ------------------------------------------------------------------------ CLI

    def cli(self, d, *args):
        e = {k: v for k, v in os.environ.items() if not k.startswith("GODWIT_")}
        e["HOME"] = d.dir
        p = subprocess.run([os.path.join(BIN, "godwit"), "--addr", d.addr, "--token", gwd.TOKEN] + list(args),
                           capture_output=True, text=True, timeout=120, env=e)
        return p.returncode, p.stdout, p.stderr

    @gwd.no_vm
    def test_one_evacuation_and_no_restore_while_drained(self):
        """Two EvacuateHost calls at once with one request_id make one job (the check was
        repeated only before the registry read, so both could start one); a host in
        maintenance takes no restore (a VM its evacuation would not know of)."""
        import threading
        got, errs = [], []

        def evac():
            try:
                got.append(self.evacuate(self.c, request_id="once-c").job.id)
            except grpc.RpcError as e:
                errs.append(e)

        threads = [threading.Thread(target=evac) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errs, [])
        self.assertEqual(len(set(got)), 1, got)
        try:
            self.assertTrue(wait_for(lambda: self.hosts_by_name()["host-c"].state == api.ClusterHost.MAINTENANCE, 20))
            bk, bk_grpc = gwd.backup_stubs()
            with self.assertRaises(grpc.RpcError) as cm:
                bk_grpc.GodwitBackupStub(self.c.channel).RestoreBackup(
                    bk.RestoreBackupRequest(target="w", vm="gone", name="gone2"), metadata=AUTH, timeout=30)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("draining or in maintenance", cm.exception.details())
        finally:
            self.call(self.c, "ExitMaintenance", api.ExitMaintenanceRequest())

    def test_cli_hosts_and_maintenance(self):
        self.create(self.a, "cli1")
        self.create(self.a, "cli2", mem=96)
        rc, out, err = self.cli(self.a, "cluster", "hosts")
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertIn("HEARTBEAT", lines[0])
        self.assertTrue(lines[1].startswith("host-a") and "active" in lines[1] and "yes" in lines[1], out)
        rc, out, err = self.cli(self.a, "--json", "cluster", "hosts")
        self.assertEqual(rc, 0, err)
        hosts = json.loads(out.strip().splitlines()[-1])["hosts"]
        self.assertEqual([h["name"] for h in hosts], ["host-a", "host-b", "host-c"])
        rc, out, err = self.cli(self.a, "host", "maintenance", "enter", "--dry-run")
        self.assertEqual(rc, 0, err)
        self.assertIn("cli1", out.splitlines()[1])      # the smaller one first
        self.assertIn("cli2", out.splitlines()[2])
        self.assertEqual(self.hosts_by_name()["host-a"].state, api.ClusterHost.ACTIVE)
        rc, out, err = self.cli(self.a, "host", "maintenance", "enter", "--wait", "--max-outbound", "1")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("moved", out)
        self.assertRegex(out, r"evacuation job-\w+ succeeded")
        self.assertEqual(self.hosts_by_name()["host-a"].state, api.ClusterHost.MAINTENANCE)
        rc, out, err = self.cli(self.a, "host", "maintenance", "exit")
        self.assertEqual((rc, out.strip()), (0, "host is active"), err)
        rc, out, err = self.cli(self.a, "host", "maintenance", "bogus")
        self.assertEqual(rc, 2)


def main():
    return gwd.run_suite(globals())


if __name__ == "__main__":
    sys.exit(main())
