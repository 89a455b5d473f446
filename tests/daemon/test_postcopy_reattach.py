#!/usr/bin/python3
"""Post-copy recovery through a destination daemon that was restarted meanwhile: two real
godwitd hosts on loopback; the destination daemon is killed (kill -9) and started again
while its runner holds the VM in post-copy, then the migration's streams are killed (ss -K).
The source must reconnect through the restarted daemon's migration port, which routes it to
the surviving runner (engine/daemon/resume_route.h); the migration completes with the VM
running on the destination only, its memory proved equal and no verify error.

    /usr/bin/python3 tests/daemon/test_postcopy_reattach.py [BUILD_DIR] [-k NAME]

Skips (77) without python3-grpcio, a usable /dev/kvm, or an `ss` that can kill sockets."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwd  # noqa: E402
from gwd import wait_for  # noqa: E402

api, api_grpc, hpb, hgrpc = gwd.stubs()
BIN = gwd.build_dir()


class DestinationRestarted(gwd.Daemons):
    """host-a (source) and host-b (destination, with a migration port)."""

    @classmethod
    def setUpClass(cls):
        a_port, b_port = gwd.free_port(), gwd.free_port()
        cls.migport = gwd.free_port()
        cls.a = gwd.Daemon(BIN, "host-a", port=a_port, extra="peers = 127.0.0.1:%d\n" % b_port)
        cls.b = gwd.Daemon(BIN, "host-b", port=b_port,
                           extra="migration_port = %d\npeers = 127.0.0.1:%d\n" % (cls.migport, a_port))
        cls.ds = [cls.a, cls.b]

    def job(self, jid):
        return self.call(self.a, "GetJob", api.GetJobRequest(id=jid)).job

    def vm(self, d, name):
        try:
            return self.call(d, "GetVm", api.GetVmRequest(name=name)).vm
        except gwd.grpc.RpcError as e:
            if e.code() == gwd.grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def summary(self, d, name):
        """The last line of the VM's runner's stdout there: its exit summary."""
        with open(os.path.join(d.dir, "state", "vms", name, "runner.out")) as f:
            return json.loads(f.read().strip().splitlines()[-1])

    def test_link_cut_after_destination_daemon_restart(self):
        if not shutil.which("ss"):
            self.skipTest("no ss to kill the connections")
        name = "survivor"
        self.call(self.a, "CreateVm", api.CreateVmRequest(name=name, start=True, memory_bytes=128 << 20,
                                                          guest="dirtier:ws=32M,rate=16M"))
        # 4 MiB/s: post-copy of the working set lasts ~10 s, long enough for a restart and a cut.
        job = self.call(self.a, "MigrateVm", api.MigrateVmRequest(
            vm=name, destination=self.b.addr,
            policy=api.MigrationPolicy(mode=api.MigrationPolicy.POSTCOPY, streams=2,
                                       bandwidth_limit_bytes_per_s=4 << 20))).job
        self.assertTrue(wait_for(lambda: self.job(job.id).progress.phase == "postcopy-active", 30, 0.1),
                        self.job(job.id))
        held = self.b.vm_runners(name)
        self.assertEqual(len(held), 1, held)
        # The destination daemon dies and comes back, twice (the second finds the route the
        # first re-attached); its runner keeps the VM in post-copy.
        for _ in range(2):
            mark = len(self.b.logtext())
            self.b.stop(signal.SIGKILL)
            self.b.start()
            self.assertTrue(wait_for(lambda: "vm=%s: post-copy resume route re-attached" % name
                                     in self.b.logtext()[mark:], 10), self.b.logtext()[mark:])
            self.assertEqual(self.b.vm_runners(name), held)
        mark = len(self.b.logtext())
        self.assertEqual(self.job(job.id).progress.phase, "postcopy-active", "post-copy ended before the cut")
        r = subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", str(self.migport)],
                           capture_output=True, text=True)
        if "ESTAB" not in r.stdout:
            self.skipTest("ss -K cannot kill sockets here: %s" % r.stderr)
        # The source reconnects through the restarted daemon's migration port (within its
        # 30 s recover timeout); without the route it stays paused and the job never ends.
        final = wait_for(lambda: (lambda j: j if j.state in (api.Job.SUCCEEDED, api.Job.FAILED, api.Job.CANCELLED)
                                  else None)(self.job(job.id)), 45, 0.2)
        self.assertIsNotNone(final, "the migration did not end after the cut: %s\n%s" % (
            self.job(job.id), "\n".join(self.b.logtext()[mark:].splitlines()[-5:])))
        self.assertEqual(final.state, api.Job.SUCCEEDED, final.error)
        self.assertGreaterEqual(final.progress.postcopy_recoveries, 1)
        self.assertEqual(final.progress.postcopy_pages_resent, 0)
        self.assertIn("vm=%s: a post-copy source reconnects" % name, self.b.logtext()[mark:])
        # The VM runs on host-b only, in the runner that held it all along.
        self.assertTrue(wait_for(lambda: (self.vm(self.b, name) or api.Vm()).state == api.Vm.RUNNING, 10))
        self.assertTrue(wait_for(lambda: self.vm(self.a, name) is None, 10), self.vm(self.a, name))
        self.assertEqual(self.a.vm_runners(name), [])
        self.assertEqual(self.b.vm_runners(name), held)
        before = self.vm(self.b, name).counters.pages_written
        self.assertTrue(wait_for(lambda: self.vm(self.b, name).counters.pages_written > before, 10))
        src = self.summary(self.a, name)
        self.assertEqual(src["state"], "migrated", src)
        self.assertTrue(src["postcopy_digest_ok"], src)
        self.call(self.b, "StopVm", api.StopVmRequest(name=name))
        dst = self.summary(self.b, name)
        self.assertEqual(dst["migration_phase"], "completed", dst)
        self.assertTrue(dst["postcopy_digest_ok"], dst)        # memory proved equal
        self.assertGreaterEqual(dst["postcopy_recoveries"], 1, dst)
        self.assertEqual(dst["guest_verify_errors"], 0, dst)
        self.assertGreater(dst["guest_pages_verified"], 0, dst)
        # The route's names go with the runner.
        vmdir = os.path.join(self.b.dir, "state", "vms", name)
        self.assertFalse(os.path.exists(os.path.join(vmdir, "resume.sock")))
        self.assertFalse(os.path.exists(os.path.join(vmdir, "resume.token")))
        self.call(self.b, "DeleteVm", api.DeleteVmRequest(name=name))


if __name__ == "__main__":
    sys.exit(gwd.run_suite(globals()))
