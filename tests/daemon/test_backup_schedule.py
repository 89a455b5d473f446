#!/usr/bin/python3
"""Backup policies and godwitd's scheduler (docs/backups.md "Schedules") with a real daemon,
real runner VMs and a local directory target, on a test clock (test_clock_file, honoured only
in GODWIT_TEST_HOOKS builds): a policy fires at its time and the backup appears; runs missed
while the daemon was stopped across several fire times run exactly once after the restart,
and the policy survives it; retention prunes to the keep-rules; with max_backups = 1 two due
VMs back up one after the other; hostile policies are refused naming the field; the CLI.

    /usr/bin/python3 tests/daemon/test_backup_schedule.py [BUILD_DIR] [-k NAME]

Skips (77) without python3-grpcio, a usable /dev/kvm or a test-hooks build."""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwd  # noqa: E402
from gwd import AUTH, TOKEN, grpc, wait_for  # noqa: E402
from test_cluster import error_reason  # noqa: E402

api, api_grpc, hpb, hgrpc = gwd.stubs()
bk, bk_grpc = gwd.backup_stubs()
BIN = gwd.build_dir()
FINAL = (api.Job.SUCCEEDED, api.Job.FAILED, api.Job.CANCELLED)
T0 = 1767225630          # 2026-01-01 00:00:30 UTC


def write_clock(path, t):
    """The daemons' test clock: its file replaced at once (they never read half a number)."""
    with open(path + ".new", "w") as f:
        f.write("%d\n" % t)
    os.rename(path + ".new", path)


class Schedule(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="gw-sched-")
        cls.store = os.path.join(cls.tmp, "store")
        cls.clock = os.path.join(cls.tmp, "clock")
        cls.set_clock(T0)
        a_port, b_port = gwd.free_port(), gwd.free_port()
        extra = ("max_backups = 1\ntest_clock_file = %s\npeers = 127.0.0.1:%%d\n[backup_target local]\nstore = dir:%s\n"
                 "[backup_target other]\nstore = dir:%s\n" % (cls.clock, cls.store, cls.store + "-other"))
        cls.d = gwd.Daemon(BIN, "host-a", port=a_port, extra=extra % b_port)
        cls.b = bk_grpc.GodwitBackupStub(cls.d.channel)
        # host-b shares the target (the same store, the same name): a migrated VM's policy
        # goes on there.
        cls.d2 = gwd.Daemon(BIN, "host-b", port=b_port, extra=extra % a_port)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "d", None):
            cls.d.cleanup()
        if getattr(cls, "d2", None):
            cls.d2.cleanup()
        if getattr(cls, "tmp", None):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def set_clock(cls, t):
        write_clock(cls.clock, t)

    # ---- helpers ----
    def call(self, method, req, timeout=60):
        stub = self.b if hasattr(self.b, method) else self.d.stub
        return getattr(stub, method)(req, metadata=AUTH, timeout=timeout)

    def make_vm(self, name, labels=(), seed=1):
        v = self.call("CreateVm", api.CreateVmRequest(name=name, memory_bytes=64 << 20, vcpus=1, labels=list(labels),
                                                        guest="dirtier:ws=16M,rate=4M,pattern=random,seed=%d" % seed,
                                                        start=True)).vm
        self.assertEqual(v.state, api.Vm.RUNNING)
        self.addCleanup(self.drop_vm, name)
        return v

    def drop_vm(self, name):
        try:
            self.call("DeleteBackupPolicy", bk.DeleteBackupPolicyRequest(vm=name))
        except grpc.RpcError:
            pass
        try:
            self.call("DeleteVm", api.DeleteVmRequest(name=name, force=True))
        except grpc.RpcError:
            pass

    def drop_label_policy(self, label):
        try:
            self.call("DeleteBackupPolicy", bk.DeleteBackupPolicyRequest(label=label))
        except grpc.RpcError:
            pass

    def set_policy(self, **kw):
        kw.setdefault("target", "local")
        return self.call("SetBackupPolicy", bk.SetBackupPolicyRequest(policy=bk.BackupPolicy(**kw))).policy

    def policy(self, vm):
        if "=" in vm:
            return self.call("GetBackupPolicy", bk.GetBackupPolicyRequest(label=vm)).policy
        return self.call("GetBackupPolicy", bk.GetBackupPolicyRequest(vm=vm)).policy

    def backups(self, vm):
        return list(self.call("ListBackups", bk.ListBackupsRequest(vm=vm, target="local")).backups)

    def job(self, jid):
        return self.call("GetJob", api.GetJobRequest(id=jid)).job

    def backup_jobs(self, vm):
        return [j for j in self.call("ListJobs", api.ListJobsRequest(vm=vm)).jobs if j.kind == api.Job.BACKUP]

    def run_done(self, vm, fire, timeout=120):
        """Waits for the policy's run for `fire` and its job's end; returns the job."""
        p = wait_for(lambda: (lambda p: p if p.last_fire_unix_s == fire and p.last_job else None)(self.policy(vm)),
                     timeout, 0.1)
        self.assertTrue(p, "no run for fire %d: %s" % (fire, self.policy(vm)))
        j = wait_for(lambda: (lambda j: j if j.state in FINAL else None)(self.job(p.last_job)), timeout, 0.1)
        self.assertEqual(j.state, api.Job.SUCCEEDED, j.error)
        return j

    # ---- tests ----
    def test_fires_at_its_time(self):
        self.set_clock(T0)
        self.make_vm("s-fire")
        p = self.set_policy(vm="s-fire", schedule="0 * * * *", keep_last=10)
        self.assertEqual(p.created_unix_s, T0)
        self.assertEqual(p.next_unix_s, T0 - 30 + 3600)      # 01:00 UTC
        time.sleep(1.5)                                        # several ticks before its time
        self.assertEqual(self.backups("s-fire"), [])
        self.assertEqual(self.policy("s-fire").last_job, "")
        self.set_clock(T0 - 30 + 3600)
        self.run_done("s-fire", T0 - 30 + 3600)
        self.assertEqual(len(self.backups("s-fire")), 1)
        p = self.policy("s-fire")
        self.assertEqual(p.next_unix_s, T0 - 30 + 7200)
        self.assertEqual(p.last_error, "")

    def test_time_zone_and_jitter(self):
        self.set_clock(T0)
        self.make_vm("s-tz")
        # 02:00 in Berlin (UTC+1 in January) is 01:00 UTC; a 10-minute window starts in it.
        p = self.set_policy(vm="s-tz", schedule="0 2 * * *", tz="Europe/Berlin", jitter_s=600)
        fire = T0 - 30 + 3600
        self.assertGreaterEqual(p.next_unix_s, fire)
        self.assertLess(p.next_unix_s, fire + 600)
        self.set_clock(p.next_unix_s - 1)
        time.sleep(1.0)
        self.assertEqual(self.policy("s-tz").last_job, "")
        self.set_clock(p.next_unix_s)
        self.run_done("s-tz", fire)
        self.assertEqual(len(self.backups("s-tz")), 1)

    def test_missed_runs_once_and_policy_survives_restart(self):
        self.set_clock(T0)
        self.make_vm("s-miss")
        p = self.set_policy(vm="s-miss", schedule="*/10 * * * *", keep_daily=7, keep_weekly=4)
        self.d.stop()
        # Down across three fire times (00:10, 00:20, 00:30): one run, for the latest.
        self.set_clock(T0 - 30 + 35 * 60)
        self.d.start()
        type(self).b = bk_grpc.GodwitBackupStub(self.d.channel)
        after = self.policy("s-miss")
        self.assertEqual((after.schedule, after.keep_daily, after.keep_weekly, after.created_unix_s),
                         (p.schedule, 7, 4, p.created_unix_s))
        self.assertTrue(wait_for(lambda: self.call("GetVm", api.GetVmRequest(name="s-miss")).vm.state == api.Vm.RUNNING,
                                 30))
        self.run_done("s-miss", T0 - 30 + 30 * 60)
        time.sleep(1.5)   # more ticks: nothing piles up
        self.assertEqual(len(self.backups("s-miss")), 1)
        self.assertEqual(len(self.backup_jobs("s-miss")), 1)
        self.assertEqual(self.policy("s-miss").next_unix_s, T0 - 30 + 40 * 60)

    def test_retention_prunes(self):
        self.set_clock(T0)
        self.make_vm("s-keep")
        self.set_policy(vm="s-keep", schedule="* * * * *", keep_last=2)
        ids = []
        for i in range(1, 4):
            fire = T0 - 30 + 60 * i
            self.set_clock(fire)
            self.run_done("s-keep", fire)
            ids.append(wait_for(lambda: (lambda b: b[-1].id if b and b[-1].id not in ids else None)(
                self.backups("s-keep")), 30))
            self.assertTrue(ids[-1])
            time.sleep(1.1)   # backup ids carry seconds: one per second keeps them ordered
        got = wait_for(lambda: (lambda b: b if len(b) == 2 else None)([x.id for x in self.backups("s-keep")]), 30)
        self.assertEqual(got, ids[1:], "keep_last 2 keeps the two newest")

    def test_host_limit_one_at_a_time(self):
        self.set_clock(T0)
        for n in ("s-k1", "s-k2"):
            self.make_vm(n)
            self.set_policy(vm=n, schedule="0 3 * * *")
        fire = T0 - 30 + 3 * 3600
        self.set_clock(fire)
        most = 0
        end = time.time() + 240
        while time.time() < end:
            jobs = self.backup_jobs("s-k1") + self.backup_jobs("s-k2")
            most = max(most, sum(1 for j in jobs if j.state not in FINAL))
            if len(jobs) == 2 and all(j.state in FINAL for j in jobs):
                break
            time.sleep(0.05)
        self.assertEqual(len(jobs), 2, "both due VMs ran")
        for j in jobs:
            self.assertEqual(j.state, api.Job.SUCCEEDED, j.error)
        self.assertEqual(most, 1)
        a, b = sorted(jobs, key=lambda j: j.created_unix_ms)
        self.assertGreaterEqual(b.created_unix_ms, a.finished_unix_ms, "the second waited for the first")
        for n in ("s-k1", "s-k2"):
            self.assertEqual(self.policy(n).last_fire_unix_s, fire)
            self.assertEqual(len(self.backups(n)), 1)

    def test_policy_follows_migration(self):
        self.set_clock(T0)
        self.make_vm("s-mig")
        p = self.set_policy(vm="s-mig", schedule="0 4 * * *", keep_last=3)
        self.set_clock(T0 - 30 + 4 * 3600)
        self.run_done("s-mig", T0 - 30 + 4 * 3600)   # a run on host-a first: its history travels
        j = self.call("MigrateVm", api.MigrateVmRequest(vm="s-mig", destination=self.d2.addr)).job
        j = wait_for(lambda: (lambda j: j if j.state in FINAL else None)(self.job(j.id)), 120, 0.2)
        self.assertEqual(j.state, api.Job.SUCCEEDED, j.error)
        b2 = bk_grpc.GodwitBackupStub(self.d2.channel)

        def on_b(method, req):
            return getattr(b2, method)(req, metadata=AUTH, timeout=30)
        self.addCleanup(lambda: self.d2.stub.DeleteVm(api.DeleteVmRequest(name="s-mig", force=True), metadata=AUTH))
        got = on_b("GetBackupPolicy", bk.GetBackupPolicyRequest(vm="s-mig")).policy
        self.assertEqual((got.schedule, got.keep_last, got.target, got.created_unix_s, got.last_fire_unix_s),
                         (p.schedule, 3, "local", p.created_unix_s, T0 - 30 + 4 * 3600))
        # The source drops its copy as it drops the VM's record (just after the job's end).
        self.assertTrue(wait_for(lambda: error_reason(lambda: self.policy("s-mig")) ==
                                 (grpc.StatusCode.NOT_FOUND, "POLICY_NOT_FOUND"), 10, 0.1))
        # The next day's run happens on host-b, into the same target.
        fire = T0 - 30 + 28 * 3600
        self.set_clock(fire)
        p2 = wait_for(lambda: (lambda p: p if p.last_fire_unix_s == fire and p.last_job else None)(
            on_b("GetBackupPolicy", bk.GetBackupPolicyRequest(vm="s-mig")).policy), 60, 0.1)
        self.assertTrue(p2)
        j = wait_for(lambda: (lambda j: j if j.state in FINAL else None)(
            self.d2.stub.GetJob(api.GetJobRequest(id=p2.last_job), metadata=AUTH).job), 120, 0.1)
        self.assertEqual(j.state, api.Job.SUCCEEDED, j.error)
        self.assertEqual(len(self.backups("s-mig")), 2)

    def test_policy_whose_target_left_the_config(self):
        self.set_clock(T0)
        self.make_vm("s-gone")
        self.set_policy(vm="s-gone", schedule="0 5 * * *", target="other")
        with open(self.d.conf) as f:
            conf = f.read()
        self.d.stop()
        with open(self.d.conf, "w") as f:
            f.write(conf.replace("[backup_target other]\n", "").replace("store = dir:%s-other\n" % self.store, ""))
        try:
            self.d.start()
            type(self).b = bk_grpc.GodwitBackupStub(self.d.channel)
            p = self.policy("s-gone")   # still there, saying why it does not run
            self.assertEqual(p.next_unix_s, 0)
            self.assertTrue(p.last_error.startswith("not run: target: no backup target named other"), p.last_error)
            self.set_clock(T0 - 30 + 5 * 3600)
            time.sleep(1.0)
            self.assertEqual(self.backup_jobs("s-gone"), [])
            self.assertIn("s-gone", [x.vm for x in self.call("ListBackupPolicies", bk.ListBackupPoliciesRequest()).policies])
            self.call("DeleteBackupPolicy", bk.DeleteBackupPolicyRequest(vm="s-gone"))
        finally:
            self.d.stop()
            with open(self.d.conf, "w") as f:
                f.write(conf)
            self.d.start()
            type(self).b = bk_grpc.GodwitBackupStub(self.d.channel)

    def test_policy_throttle_applies_when_it_fires(self):
        self.set_clock(T0)
        self.make_vm("s-thr", seed=77)
        # Its working set written once (random, its own seed: 16 MiB that no other VM's backup
        # in the shared target already stored).
        self.assertTrue(wait_for(lambda: self.call("GetVm", api.GetVmRequest(name="s-thr")).vm.counters.pages_written
                                 >= 4096, 60))
        rate = 2 << 20
        p = self.set_policy(vm="s-thr", schedule="0 8 * * *", rate=rate, ops=5000, adaptive="off")
        self.assertEqual((p.rate, p.ops, p.adaptive), (rate, 5000, "off"))
        fire = T0 - 30 + 8 * 3600
        self.set_clock(fire)
        j = self.run_done("s-thr", fire)
        written = j.progress.backup_bytes_written
        secs = (j.finished_unix_ms - j.started_unix_ms) / 1000.0
        self.assertGreater(written, 8 << 20, "the working set was written")
        # Its own bucket lets through at most 4 MiB of burst plus the rate over the time (an
        # unthrottled one writes this in well under a second here).
        got = (written - (4 << 20)) / secs
        print("policy rate 2 MiB/s: %.2f MiB/s over %.1f s" % (got / (1 << 20), secs))
        self.assertLessEqual(got, rate * 1.1)
        self.assertGreaterEqual(got, rate * 0.5)
        self.assertEqual(self.policy("s-thr").adaptive, "off")

    def test_vm_labels(self):
        v = self.make_vm("s-lab", labels=["tier=web", "env=prod", "team/a=x_1"])
        self.assertEqual(v.labels, "env=prod,team/a=x_1,tier=web")
        got = [x.labels for x in self.call("ListVms", api.ListVmsRequest()).vms if x.name == "s-lab"]
        self.assertEqual(got, ["env=prod,team/a=x_1,tier=web"])
        bad = [["tier"], ["=web"], ["tier=web,env=x"], ["tier=a b"], ["-x=1"], ["k" * 64 + "=1"], ["k=" + "v" * 64],
               ["tier=a", "tier=b"], ["k%d=v" % i for i in range(17)]]
        for labels in bad:
            with self.assertRaises(grpc.RpcError, msg=str(labels)[:60]) as cm:
                self.call("CreateVm", api.CreateVmRequest(name="s-lab-bad", labels=labels))
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, labels)
            self.assertTrue(cm.exception.details().startswith("labels:"), cm.exception.details())
        self.assertEqual(error_reason(lambda: self.call("GetVm", api.GetVmRequest(name="s-lab-bad")))[0],
                         grpc.StatusCode.NOT_FOUND)
        # The labels stay with the VM's record across a daemon restart.
        self.d.stop()
        self.d.start()
        type(self).b = bk_grpc.GodwitBackupStub(self.d.channel)
        self.assertEqual(self.call("GetVm", api.GetVmRequest(name="s-lab")).vm.labels, "env=prod,team/a=x_1,tier=web")

    def test_label_policy_and_own_policy_wins(self):
        self.set_clock(T0)
        for n, labels in (("s-web1", ["tier=web"]), ("s-web2", ["tier=web", "env=x"]), ("s-db", ["tier=db"]),
                          ("s-own", ["tier=web"])):
            self.make_vm(n, labels)
        self.addCleanup(self.drop_label_policy, "tier=web")
        lp = self.set_policy(label="tier=web", schedule="0 9 * * *", keep_last=3)
        self.assertEqual((lp.label, lp.vm), ("tier=web", ""))
        self.set_policy(vm="s-own", schedule="0 10 * * *")
        fire = T0 - 30 + 9 * 3600
        self.set_clock(fire)
        # Both web VMs run (one after the other: max_backups = 1), each with its own history.
        runs = wait_for(lambda: (lambda p: p.runs if len(p.runs) == 2 and all(r.last_job for r in p.runs) else None)(
            self.policy("tier=web")), 120, 0.2)
        self.assertTrue(runs, self.policy("tier=web"))
        self.assertEqual(sorted(r.vm for r in runs), ["s-web1", "s-web2"])
        for r in runs:
            self.assertEqual(r.last_fire_unix_s, fire)
            j = wait_for(lambda: (lambda j: j if j.state in FINAL else None)(self.job(r.last_job)), 120, 0.1)
            self.assertEqual(j.state, api.Job.SUCCEEDED, j.error)
            self.assertEqual(j.vm, r.vm)
            self.assertEqual(len(self.backups(r.vm)), 1)
        time.sleep(1.0)   # more ticks: no second run, and none for the others
        self.assertEqual(len(self.backup_jobs("s-web1")), 1)
        self.assertEqual(self.backup_jobs("s-db"), [], "the label does not match")
        self.assertEqual(self.backup_jobs("s-own"), [], "its own policy wins over the label policy")
        self.assertEqual(self.policy("tier=web").next_unix_s, fire + 86400)
        # The run records survive a restart: nothing runs again for that fire.
        self.d.stop()
        self.d.start()
        type(self).b = bk_grpc.GodwitBackupStub(self.d.channel)
        self.assertTrue(wait_for(lambda: all(self.call("GetVm", api.GetVmRequest(name=n)).vm.state == api.Vm.RUNNING
                                             for n in ("s-web1", "s-web2", "s-own")), 30))
        time.sleep(1.5)
        self.assertEqual(sorted((r.vm, r.last_fire_unix_s) for r in self.policy("tier=web").runs),
                         [("s-web1", fire), ("s-web2", fire)])
        self.assertEqual(len(self.backup_jobs("s-web1")) + len(self.backup_jobs("s-web2")), 2)
        # Its own policy runs it at its own time.
        self.set_clock(T0 - 30 + 10 * 3600)
        self.run_done("s-own", T0 - 30 + 10 * 3600)
        self.assertEqual(len(self.backup_jobs("s-web2")), 1)
        # Deleting the label policy takes its run records along.
        self.call("DeleteBackupPolicy", bk.DeleteBackupPolicyRequest(label="tier=web"))
        self.assertEqual(error_reason(lambda: self.policy("tier=web")), (grpc.StatusCode.NOT_FOUND, "POLICY_NOT_FOUND"))
        listed = [(p.vm, p.label) for p in self.call("ListBackupPolicies", bk.ListBackupPoliciesRequest()).policies]
        self.assertNotIn(("s-web1", "tier=web"), listed)
        self.assertFalse([x for x in listed if x[1]], listed)

    @gwd.no_vm
    def test_hostile_policies_refused(self):
        bad = [
            (dict(vm="../etc", schedule="0 2 * * *"), "vm:"),
            (dict(vm="", schedule="0 2 * * *"), "vm:"),
            (dict(vm="h1", schedule=""), "schedule:"),
            (dict(vm="h1", schedule="61 * * * *"), "schedule:"),
            (dict(vm="h1", schedule="0 2 * *"), "schedule:"),
            (dict(vm="h1", schedule="0 0 30 2 *"), "schedule:"),
            (dict(vm="h1", schedule="*/" + "9" * 400 + " * * * *"), "schedule:"),
            (dict(vm="h1", schedule="0 2 * * *", tz="../../etc/passwd"), "tz:"),
            (dict(vm="h1", schedule="0 2 * * *", tz="Mars/Olympus_Mons"), "tz:"),
            (dict(vm="h1", schedule="0 2 * * *", tz="x" * 300), "tz:"),
            (dict(vm="h1", schedule="0 2 * * *", jitter_s=86401), "jitter_s:"),
            (dict(vm="h1", schedule="0 2 * * *", target="nope"), "target:"),
            (dict(vm="h1", schedule="0 2 * * *", target="/tmp/x"), "target:"),
            (dict(vm="h1", schedule="0 2 * * *", target="t" * 100), "target:"),
            (dict(vm="h1", schedule="0 2 * * *", keep_daily=2000000), "keep:"),
            (dict(vm="h1", schedule="0 2 * * *", method="rsync"), "method:"),
            (dict(vm="h1", schedule="0 2 * * *", rate=(1 << 40) + 1), "rate:"),
            (dict(vm="h1", schedule="0 2 * * *", ops=1000001), "ops:"),
            (dict(vm="h1", schedule="0 2 * * *", adaptive="maybe"), "adaptive:"),
            (dict(vm="h1", label="tier=web", schedule="0 2 * * *"), "vm:"),
            (dict(label="tier", schedule="0 2 * * *"), "label:"),
            (dict(label="a b=c", schedule="0 2 * * *"), "label:"),
            (dict(label="k=" + "v" * 64, schedule="0 2 * * *"), "label:"),
        ]
        for kw, field in bad:
            with self.assertRaises(grpc.RpcError, msg=str(kw)[:80]) as cm:
                self.set_policy(**kw)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, kw)
            self.assertTrue(cm.exception.details().startswith(field), (kw, cm.exception.details()))
        with self.assertRaises(grpc.RpcError) as cm:
            self.call("SetBackupPolicy", bk.SetBackupPolicyRequest())
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(error_reason(lambda: self.policy("h1")), (grpc.StatusCode.NOT_FOUND, "POLICY_NOT_FOUND"))
        self.assertEqual(error_reason(lambda: self.call("DeleteBackupPolicy", bk.DeleteBackupPolicyRequest(vm="h1"))),
                         (grpc.StatusCode.NOT_FOUND, "POLICY_NOT_FOUND"))
        names = [p.vm for p in self.call("ListBackupPolicies", bk.ListBackupPoliciesRequest()).policies]
        self.assertNotIn("h1", names)

    @gwd.no_vm
    def test_cli(self):
        def cli(*args):
            return subprocess.run([os.path.join(BIN, "godwit"), "--addr", self.d.addr, "--token", TOKEN] + list(args),
                                  capture_output=True, text=True, timeout=60)
        self.set_clock(T0)
        r = cli("backup", "policy", "set", "--vm", "web1", "--schedule", "0 2 * * *", "--tz", "Europe/Berlin",
                "--jitter", "10m", "--keep-daily", "7", "--keep-weekly", "4", "--target", "local")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.addCleanup(self.drop_vm, "web1")
        p = self.policy("web1")
        self.assertEqual((p.schedule, p.tz, p.jitter_s, p.keep_daily, p.keep_weekly, p.target),
                         ("0 2 * * *", "Europe/Berlin", 600, 7, 4, "local"))
        r = cli("backup", "policy", "list")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("web1", r.stdout)
        r = cli("backup", "policy", "show", "web1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Europe/Berlin", r.stdout)
        r = cli("backup", "policy", "set", "--vm", "web1", "--schedule", "0 25 * * *", "--target", "local")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("schedule:", r.stderr)
        r = cli("backup", "policy", "set", "--vm", "web1", "--schedule", "0 2 * * *", "--jitter", "3d", "--target", "local")
        self.assertNotEqual(r.returncode, 0)
        r = cli("backup", "policy", "delete", "web1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(error_reason(lambda: self.policy("web1")), (grpc.StatusCode.NOT_FOUND, "POLICY_NOT_FOUND"))
        # Labels and label policies with a throttle.
        r = cli("vm", "create", "s-cli-lab", "--label", "tier=cli", "--label", "env=test")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.addCleanup(self.drop_vm, "s-cli-lab")
        self.assertIn("env=test,tier=cli", r.stdout)
        r = cli("vm", "show", "s-cli-lab")
        self.assertIn("labels:        env=test,tier=cli", r.stdout)
        r = cli("backup", "policy", "set", "--label", "tier=cli", "--schedule", "0 2 * * *", "--target", "local",
                "--rate", "10M", "--ops", "300", "--adaptive", "off")
        self.assertEqual(r.returncode, 0, r.stderr)
        p = self.policy("tier=cli")
        self.assertEqual((p.label, p.rate, p.ops, p.adaptive), ("tier=cli", 10 << 20, 300, "off"))
        r = cli("backup", "policy", "show", "tier=cli")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("label:     tier=cli", r.stdout)
        self.assertIn("adaptive off", r.stdout)
        self.assertIn("label:tier=cli", cli("backup", "policy", "list").stdout)
        r = cli("backup", "policy", "set", "--label", "tier=cli", "--schedule", "0 2 * * *", "--target", "local",
                "--adaptive", "sometimes")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("adaptive:", r.stderr)
        r = cli("backup", "policy", "delete", "tier=cli")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(error_reason(lambda: self.policy("tier=cli")), (grpc.StatusCode.NOT_FOUND, "POLICY_NOT_FOUND"))


class ClusterLimit(gwd.Daemons):
    """cluster_max_backups with two real daemons: host-a and host-b share one target (a
    directory store, whose cluster slot is a flock in the store) with cluster_max_backups = 1
    and max_backups = 2 (the host limit is not what orders them). Both policies fire at the same
    time; the job timelines show that the backups never overlap: the second waits for the slot
    and runs once the first has ended."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="gw-sched-cl-")
        cls.clock = os.path.join(cls.tmp, "clock")
        write_clock(cls.clock, T0)
        extra = ("max_backups = 2\ncluster_max_backups = 1\ntest_clock_file = %s\n[backup_target shared]\n"
                 "store = dir:%s\n" % (cls.clock, os.path.join(cls.tmp, "store")))
        cls.ds = []
        for host in ("host-a", "host-b"):
            cls.ds.append(gwd.Daemon(BIN, host, extra=extra))

    def test_two_daemons_never_back_up_at_once(self):
        fire = T0 - 30 + 3600
        for d in self.ds:
            name = "c-" + d.name
            v = self.call(d, "CreateVm", api.CreateVmRequest(name=name, memory_bytes=64 << 20, vcpus=1, start=True,
                                                             guest="dirtier:ws=16M,rate=4M,pattern=random,seed=%d"
                                                             % ord(name[-1]))).vm
            self.assertEqual(v.state, api.Vm.RUNNING)
            self.assertTrue(wait_for(lambda: self.call(d, "GetVm", api.GetVmRequest(name=name)).vm.counters.pages_written
                                     >= 4096, 60))
            # 16 MiB at 4 MiB/s: each backup lasts seconds, so an overlap could not hide.
            self.call(d, "SetBackupPolicy", bk.SetBackupPolicyRequest(policy=bk.BackupPolicy(
                vm=name, schedule="0 1 * * *", target="shared", rate=4 << 20, adaptive="off")))
        write_clock(self.clock, fire)
        most, jobs = 0, []
        end = time.time() + 240
        while time.time() < end:
            jobs = [j for d in self.ds for j in self.call(d, "ListJobs", api.ListJobsRequest()).jobs
                    if j.kind == api.Job.BACKUP]
            most = max(most, sum(1 for j in jobs if j.state not in FINAL))
            if len(jobs) == 2 and all(j.state in FINAL for j in jobs):
                break
            time.sleep(0.05)
        self.assertEqual(len(jobs), 2, "both daemons ran their VM's backup")
        for j in jobs:
            self.assertEqual(j.state, api.Job.SUCCEEDED, j.error)
        self.assertEqual(most, 1, "never two at once")
        a, b = sorted(jobs, key=lambda j: j.created_unix_ms)
        self.assertNotEqual(a.vm, b.vm)
        # Each wrote its own 16 MiB (its own seed) at 4 MiB/s: seconds long.
        self.assertGreater(a.finished_unix_ms - a.started_unix_ms, 1500)
        self.assertGreater(b.finished_unix_ms - b.started_unix_ms, 1500)
        self.assertGreaterEqual(b.created_unix_ms, a.finished_unix_ms, "the second waited for the cluster slot")
        print("cluster slot: %s %d-%d ms, then %s %d-%d ms" % (a.vm, 0, a.finished_unix_ms - a.created_unix_ms, b.vm,
                                                              b.created_unix_ms - a.created_unix_ms,
                                                              b.finished_unix_ms - a.created_unix_ms))
        # Each policy records the fire it ran for, on its own daemon.
        for d in self.ds:
            p = self.call(d, "GetBackupPolicy", bk.GetBackupPolicyRequest(vm="c-" + d.name)).policy
            self.assertEqual(p.last_fire_unix_s, fire)
            self.assertEqual(p.last_error, "")


def main():
    global BIN
    if len(sys.argv) > 1 and os.path.isdir(sys.argv[1]):
        BIN = os.path.abspath(sys.argv.pop(1))
    for b in ("godwitd", "godwit-vm", "godwit"):
        if not os.access(os.path.join(BIN, b), os.X_OK):
            print("SKIP: %s not built in %s" % (b, BIN))
            return gwd.SKIP
    # The test clock is a test-hooks build's: a production build refuses the key.
    probe = tempfile.mkdtemp(prefix="gw-sched-probe-")
    try:
        conf = os.path.join(probe, "c.conf")
        with open(conf, "w") as f:
            # A later unknown key stops it right after that line either way: nothing starts.
            f.write("[daemon]\ntest_clock_file = x\nzz_probe = 1\n")
        r = subprocess.run([os.path.join(BIN, "godwitd"), "--config", conf], capture_output=True, text=True,
                           timeout=30)
        if "unknown key 'test_clock_file'" in r.stderr + r.stdout:
            print("SKIP: godwitd built without GODWIT_TEST_HOOKS")
            return gwd.SKIP
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return gwd.run_tests()


if __name__ == "__main__":
    sys.exit(main())
