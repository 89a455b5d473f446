#!/usr/bin/python3
"""One owner for every VM: two real godwitd hosts on loopback, faults injected through the
daemons (kill -9, SIGSTOP), and after each one the VM runs on exactly one host, or is IN_DOUBT
with a reason until the destination answers or the operator decides.

    /usr/bin/python3 tests/daemon/test_owner.py [BUILD_DIR] [-k NAME]

The in-doubt cases need a runner built with GODWIT_TEST_HOOKS (make test's build): without
it they cannot inject the lost RUNNING and are reported as skipped. Skips (77) without
python3-grpcio or a usable /dev/kvm."""
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwd  # noqa: E402
from gwd import AUTH, code_of, grpc, wait_for  # noqa: E402

api, api_grpc, hpb, hgrpc = gwd.stubs()
BIN = gwd.build_dir()
SLOW = dict(memory_bytes=64 << 20, vcpus=1, guest="dirtier:ws=16M,rate=2M")


def test_hooks():
    r = subprocess.run([os.path.join(BIN, "godwit-vm"), "run", "--test-fault"], capture_output=True, text=True)
    return "'--test-fault' requires an argument" in r.stderr


class Hosts(unittest.TestCase):
    """host-a (source) and host-b (destination, with a migration port)."""
    fault = None

    @classmethod
    def setUpClass(cls):
        if cls.fault and not test_hooks():
            raise unittest.SkipTest("godwit-vm built without GODWIT_TEST_HOOKS: cannot lose RUNNING on purpose")
        extra = "test_runner_fault = %s\n" % cls.fault if cls.fault else ""
        # Each host names the other as a peer (a destination must be a configured peer).
        a_port, b_port = gwd.free_port(), gwd.free_port()
        cls.a = gwd.Daemon(BIN, "host-a", port=a_port, extra=extra + "peers = 127.0.0.1:%d\n" % b_port)
        cls.b = gwd.Daemon(BIN, "host-b", port=b_port,
                           extra="migration_port = %d\npeers = 127.0.0.1:%d\n" % (gwd.free_port(), a_port))

    @classmethod
    def tearDownClass(cls):
        for d in (cls.a, cls.b):
            if d.proc and d.proc.poll() is None:
                try:
                    d.proc.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
            d.cleanup()

    def call(self, d, method, req, timeout=20):
        return getattr(d.stub, method)(req, metadata=AUTH, timeout=timeout)

    def vm(self, d, name):
        # One call: the VM may go between two (a test waiting for it to go saw NOT_FOUND
        # raised from a second GetVm right after the first had found it).
        # Any error reads as "not there", as before (a daemon restarting answers UNAVAILABLE).
        try:
            return self.call(d, "GetVm", api.GetVmRequest(name=name)).vm
        except grpc.RpcError:
            return None

    def job(self, d, jid):
        return self.call(d, "GetJob", api.GetJobRequest(id=jid)).job

    def final_job(self, d, jid, timeout=90):
        return wait_for(lambda: (lambda j: j if j.state in (api.Job.SUCCEEDED, api.Job.FAILED, api.Job.CANCELLED)
                                 else None)(self.job(d, jid)), timeout, 0.2)

    def start(self, name, **kw):
        args = dict(SLOW)
        args.update(kw)
        return self.call(self.a, "CreateVm", api.CreateVmRequest(name=name, start=True, **args)).vm

    def migrate(self, name, **policy):
        return self.call(self.a, "MigrateVm", api.MigrateVmRequest(
            vm=name, destination=self.b.addr, policy=api.MigrationPolicy(**policy))).job

    def vm_runners(self, d, name):
        return d.vm_runners(name)

    def assert_runs_on_b_only(self, name):
        vm = wait_for(lambda: (lambda v: v if v and v.state == api.Vm.RUNNING else None)(self.vm(self.b, name)), 20)
        self.assertIsNotNone(vm, "not running on host-b: %s" % self.vm(self.b, name))
        # The source lets the VM go once its runner (which refuses everything but STATUS and
        # STOP after the hand-over) has left.
        self.assertTrue(wait_for(lambda: self.vm(self.a, name) is None, 10),
                        "host-a still has it: %s" % self.vm(self.a, name))
        time.sleep(1.0)   # a restart policy would act within its backoff
        self.assertEqual(self.vm_runners(self.a, name), [], "a runner of the VM runs on host-a")
        self.assertEqual(len(self.vm_runners(self.b, name)), 1)
        before = self.vm(self.b, name).counters.pages_written
        self.assertTrue(wait_for(lambda: self.vm(self.b, name).counters.pages_written > before, 10))
        self.assertEqual(self.vm(self.b, name).counters.verify_errors, 0)

    def assert_runs_on_a_only(self, name):
        vm = wait_for(lambda: (lambda v: v if v and v.state == api.Vm.RUNNING else None)(self.vm(self.a, name)), 20)
        self.assertIsNotNone(vm, "not running on host-a: %s" % self.vm(self.a, name))
        self.assertTrue(wait_for(lambda: self.vm(self.b, name) is None, 10), "host-b has it: %s" % self.vm(self.b, name))
        self.assertEqual(self.vm_runners(self.b, name), [])
        before = self.vm(self.a, name).counters.pages_written
        self.assertTrue(wait_for(lambda: self.vm(self.a, name).counters.pages_written > before, 10),
                        "the VM does not run on host-a")

    def cleanup_vm(self, name):
        for d in (self.a, self.b):
            # A source whose job ended keeps the record until its runner has left (~1.5 s).
            wait_for(lambda: (lambda v: v is None or v.state != api.Vm.MIGRATING or v.arriving)(self.vm(d, name)), 10)
            v = self.vm(d, name)
            if v and v.arriving and not v.runner_pid:
                continue   # a reservation whose source went away: it expires by itself (30 s)
            if v:
                self.call(d, "DeleteVm", api.DeleteVmRequest(name=name, force=True))

    def wait_precopy(self, jid):
        self.assertTrue(wait_for(lambda: self.job(self.a, jid).progress.sent_bytes > 0, 30), self.job(self.a, jid))


class SourceDaemonKilled(Hosts):
    """Cases 1 and 2 of the issue: the source godwitd dies with -9 during pre-copy and its
    runner finishes the move alone."""

    def killed_source(self, name, policy):
        vm = self.start(name, restart_policy=policy)
        job = self.migrate(name, bandwidth_limit_bytes_per_s=4 << 20)
        self.wait_precopy(job.id)
        self.a.stop(signal.SIGKILL)
        # The runner finishes the hand-over without its daemon, then leaves.
        self.assertTrue(wait_for(lambda: not gwd.pid_alive(vm.runner_pid), 90), "the source runner never left")
        self.a.start()
        self.assert_runs_on_b_only(name)
        self.assertEqual(self.a.logtext().count("vm=%s: restart" % name), 0)
        j = self.job(self.a, job.id)
        self.assertEqual(j.state, api.Job.SUCCEEDED, j.error + self.a.logtext()[-3000:])   # not "interrupted"
        self.assertEqual(j.destination, self.b.addr)
        self.assertIn("VM now runs on %s" % self.b.addr, self.a.logtext())
        # A `vm start` on the source cannot make a second copy.
        got, details = code_of(lambda: self.call(self.a, "StartVm", api.StartVmRequest(name=name)))
        self.assertEqual(got, grpc.StatusCode.NOT_FOUND, details)
        self.cleanup_vm(name)

    def test_default_policy(self):
        self.killed_source("moved-default", None)

    def test_on_crash_policy(self):
        self.killed_source("moved-oncrash", api.RestartPolicy(kind=api.RestartPolicy.ON_CRASH, backoff_ms=50))

    def test_source_daemon_back_while_still_migrating(self):
        # Back before the runner is done: the re-attached runner is followed by status and
        # never called running; the job ends with the migration's real outcome.
        vm = self.start("moved-followed", restart_policy=api.RestartPolicy(kind=api.RestartPolicy.ON_CRASH))
        job = self.migrate("moved-followed", bandwidth_limit_bytes_per_s=4 << 20)
        self.wait_precopy(job.id)
        self.a.stop(signal.SIGKILL)
        self.a.start()
        self.assertTrue(gwd.pid_alive(vm.runner_pid))
        v = self.vm(self.a, "moved-followed")
        if v is not None:
            self.assertEqual(v.state, api.Vm.MIGRATING)
        j = self.final_job(self.a, job.id)
        self.assertEqual(j.state, api.Job.SUCCEEDED, j.error)
        self.assert_runs_on_b_only("moved-followed")
        self.cleanup_vm("moved-followed")

    def test_cancel_after_source_daemon_restart(self):
        # CancelJob of a migration re-attached after a restart reaches its runner: the job ends
        # CANCELLED, the VM runs on here and nothing is left on the destination.
        self.start("cancel-followed")
        job = self.migrate("cancel-followed", bandwidth_limit_bytes_per_s=1 << 20)
        self.wait_precopy(job.id)
        self.a.stop(signal.SIGKILL)
        self.a.start()
        self.assertEqual(self.vm(self.a, "cancel-followed").state, api.Vm.MIGRATING)
        self.call(self.a, "CancelJob", api.CancelJobRequest(id=job.id))
        j = self.final_job(self.a, job.id, timeout=30)
        self.assertEqual(j.state, api.Job.CANCELLED, j.error)
        self.assertIn("runs on host-a", j.error)
        self.assert_runs_on_a_only("cancel-followed")
        self.cleanup_vm("cancel-followed")

    def test_destination_daemon_killed_during_precopy(self):
        self.start("dst-killed")
        job = self.migrate("dst-killed", bandwidth_limit_bytes_per_s=4 << 20)
        self.wait_precopy(job.id)
        self.b.stop(signal.SIGKILL)
        j = self.final_job(self.a, job.id)
        self.b.start()
        if j.state == api.Job.SUCCEEDED:
            self.assert_runs_on_b_only("dst-killed")
        else:
            self.assert_runs_on_a_only("dst-killed")
        self.cleanup_vm("dst-killed")


class KilledAtEachPhase(Hosts):
    """kill -9 of the source or the destination daemon at several points of a migration
    (queued/preparing, setup, pre-copy): once both daemons are back and things settled, the
    VM runs on exactly one host and its job has ended."""

    def running_on(self, d, name):
        v = self.vm(d, name)
        return bool(v and v.state == api.Vm.RUNNING and self.vm_runners(d, name))

    def settle(self, name, jid):
        def one_host():
            a, b = self.running_on(self.a, name), self.running_on(self.b, name)
            j = self.job(self.a, jid)
            done = j.state in (api.Job.SUCCEEDED, api.Job.FAILED, api.Job.CANCELLED)
            return (a != b) and done and (a or not self.vm_runners(self.a, name)) and \
                (b or not self.vm_runners(self.b, name))
        self.assertTrue(wait_for(one_host, 90, 0.3),
                        "not on exactly one host: a=%s b=%s job=%s" % (self.vm(self.a, name), self.vm(self.b, name),
                                                                     self.job(self.a, jid)))
        j = self.job(self.a, jid)
        if self.running_on(self.a, name):
            self.assertNotEqual(j.state, api.Job.SUCCEEDED)
            self.assertIn("host-a", j.error)   # the job says where the VM is
        else:
            self.assertEqual(j.state, api.Job.SUCCEEDED, j.error)
        self.cleanup_vm(name)

    def kill_at(self, victim, name, delay):
        self.start(name)
        job = self.migrate(name, bandwidth_limit_bytes_per_s=8 << 20)
        time.sleep(delay)
        victim.stop(signal.SIGKILL)
        time.sleep(0.5)
        victim.start()
        self.settle(name, job.id)

    def test_source_killed_at_once(self):
        self.kill_at(self.a, "kill-src-0", 0.0)

    def test_source_killed_in_setup(self):
        self.kill_at(self.a, "kill-src-1", 0.3)

    def test_source_killed_in_precopy(self):
        self.kill_at(self.a, "kill-src-2", 1.5)

    def test_destination_killed_at_once(self):
        self.kill_at(self.b, "kill-dst-0", 0.0)

    def test_destination_killed_in_precopy(self):
        self.kill_at(self.b, "kill-dst-2", 1.5)


class Stalled(Hosts):
    def test_frozen_destination_fails_the_job(self):
        self.start("stalled")
        job = self.migrate("stalled", bandwidth_limit_bytes_per_s=8 << 20)
        self.wait_precopy(job.id)
        runners = self.vm_runners(self.b, "stalled")
        self.assertEqual(len(runners), 1, self.b.logtext()[-2000:])
        os.kill(runners[0], signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            j = self.final_job(self.a, job.id, timeout=120)
        finally:
            try:
                os.kill(runners[0], signal.SIGCONT)
            except ProcessLookupError:
                pass   # the source's AbortIncoming had it killed: the expected end
        print("stalled destination: job ended after %.1f s" % (time.monotonic() - t0), file=sys.stderr)
        self.assertEqual(j.state, api.Job.FAILED)
        self.assertIn("no progress", j.error)
        self.assertIn("stalled", j.error)
        self.assertIn("runs on host-a", j.error)
        self.assert_runs_on_a_only("stalled")
        self.cleanup_vm("stalled")


class InDoubtNeverStarted(Hosts):
    """GO never reached the destination (test fault drop-go): the destination says the VM is
    absent, so the source resumes it."""
    fault = "drop-go"

    def test_resolved_keep_source(self):
        self.start("doubt-absent")
        job = self.migrate("doubt-absent")
        j = self.final_job(self.a, job.id)
        self.assertEqual(j.state, api.Job.FAILED)
        self.assertIn("never started it", j.error)
        self.assertIn("runs on host-a", j.error)
        self.assert_runs_on_a_only("doubt-absent")
        self.cleanup_vm("doubt-absent")

    def test_unreachable_then_operator_keeps_source(self):
        self.start("doubt-op")
        # Pre-copy lasts a few seconds (bandwidth limit): host-b freezes before the hand-over.
        job = self.migrate("doubt-op", bandwidth_limit_bytes_per_s=4 << 20)
        self.wait_precopy(job.id)
        self.b.proc.send_signal(signal.SIGSTOP)
        try:
            j = self.final_job(self.a, job.id)
            self.assertEqual(j.state, api.Job.FAILED)
            self.assertIn("in doubt", j.error)
            vm = self.vm(self.a, "doubt-op")
            self.assertEqual(vm.state, api.Vm.IN_DOUBT)
            self.assertIn("unreachable", vm.error)
            self.assertEqual(vm.in_doubt_peer, self.b.addr)
            self.assertEqual(vm.in_doubt_job, job.id)
            # It never runs here by itself, and nothing but ResolveVm touches it.
            before = vm.counters.pages_written
            for m, req in (("StartVm", api.StartVmRequest(name="doubt-op")),
                           ("StopVm", api.StopVmRequest(name="doubt-op")),
                           ("DeleteVm", api.DeleteVmRequest(name="doubt-op", force=True)),
                           ("MigrateVm", api.MigrateVmRequest(vm="doubt-op", destination=self.b.addr))):
                got, details = code_of(lambda: self.call(self.a, m, req))
                self.assertEqual(got, grpc.StatusCode.FAILED_PRECONDITION, "%s: %s" % (m, details))
            got, _ = code_of(lambda: self.call(self.a, "ResolveVm", api.ResolveVmRequest(name="doubt-op")))
            self.assertEqual(got, grpc.StatusCode.INVALID_ARGUMENT)
            time.sleep(1)
            self.assertEqual(self.vm(self.a, "doubt-op").counters.pages_written, before)
            vm = self.call(self.a, "ResolveVm", api.ResolveVmRequest(name="doubt-op", keep_source=True)).vm
            self.assertEqual(vm.state, api.Vm.RUNNING)
        finally:
            self.b.proc.send_signal(signal.SIGCONT)
        self.assert_runs_on_a_only("doubt-op")
        got, _ = code_of(lambda: self.call(self.a, "ResolveVm", api.ResolveVmRequest(name="doubt-op", keep_source=True)))
        self.assertEqual(got, grpc.StatusCode.FAILED_PRECONDITION)
        self.cleanup_vm("doubt-op")


class InDoubtRunningThere(Hosts):
    """GO reached the destination but RUNNING was lost (test fault close-after-go): the
    destination says it runs the VM, so the source discards its copy."""
    fault = "close-after-go"

    def test_resolved_keep_destination(self):
        vm = self.start("doubt-there", restart_policy=api.RestartPolicy(kind=api.RestartPolicy.ON_CRASH))
        job = self.migrate("doubt-there")
        j = self.final_job(self.a, job.id)
        self.assertEqual(j.state, api.Job.SUCCEEDED, j.error)
        self.assertTrue(wait_for(lambda: not gwd.pid_alive(vm.runner_pid), 10))
        self.assert_runs_on_b_only("doubt-there")
        self.cleanup_vm("doubt-there")

    def test_unreachable_then_reachable(self):
        vm = self.start("doubt-later")
        # Pre-copy lasts a few seconds (bandwidth limit): host-b freezes before the hand-over.
        job = self.migrate("doubt-later", bandwidth_limit_bytes_per_s=4 << 20)
        self.wait_precopy(job.id)
        self.b.proc.send_signal(signal.SIGSTOP)
        try:
            j = self.final_job(self.a, job.id)
            self.assertEqual(j.state, api.Job.FAILED)
            self.assertIn("in doubt", j.error)
            self.assertEqual(self.vm(self.a, "doubt-later").state, api.Vm.IN_DOUBT)
            self.assertTrue(gwd.pid_alive(vm.runner_pid))   # the paused copy is kept until settled
        finally:
            self.b.proc.send_signal(signal.SIGCONT)
        # The resolver keeps asking: once host-b answers, the copy here goes.
        self.assertTrue(wait_for(lambda: self.vm(self.a, "doubt-later") is None, 30))
        self.assertTrue(wait_for(lambda: not gwd.pid_alive(vm.runner_pid), 10))
        self.assert_runs_on_b_only("doubt-later")
        self.cleanup_vm("doubt-later")

    def test_in_doubt_survives_a_source_daemon_restart(self):
        vm = self.start("doubt-restart")
        # Pre-copy lasts a few seconds (bandwidth limit): host-b freezes before the hand-over.
        job = self.migrate("doubt-restart", bandwidth_limit_bytes_per_s=4 << 20)
        self.wait_precopy(job.id)
        self.b.proc.send_signal(signal.SIGSTOP)
        try:
            self.assertTrue(wait_for(lambda: (self.vm(self.a, "doubt-restart") or api.Vm()).state == api.Vm.IN_DOUBT, 60))
            self.a.stop(signal.SIGKILL)
            self.a.start()
            v = self.vm(self.a, "doubt-restart")
            self.assertEqual(v.state, api.Vm.IN_DOUBT, v)   # never re-attached as running
            self.assertTrue(gwd.pid_alive(vm.runner_pid))
            self.call(self.a, "ResolveVm", api.ResolveVmRequest(name="doubt-restart", keep_destination=True))
            self.assertIsNone(self.vm(self.a, "doubt-restart"))
            self.assertTrue(wait_for(lambda: not gwd.pid_alive(vm.runner_pid), 10))
        finally:
            self.b.proc.send_signal(signal.SIGCONT)
        self.assert_runs_on_b_only("doubt-restart")
        self.cleanup_vm("doubt-restart")


class SourceRunnerDiesAfterGo(Hosts):
    """The source runner dies (test fault die-after-go: SIGKILL once GO went out and the
    destination answered RUNNING) before it writes its hand-over record. Its daemon sees only
    a runner that ended mid-migration: it must ask the destination, never restart the VM."""
    fault = "die-after-go"

    def test_moved_vm_is_never_restarted_here(self):
        vm = self.start("gone-after-go", restart_policy=api.RestartPolicy(kind=api.RestartPolicy.ON_CRASH))
        job = self.migrate("gone-after-go")
        j = self.final_job(self.a, job.id)
        self.assertEqual(j.state, api.Job.SUCCEEDED, j.error + self.a.logtext()[-3000:])
        self.assertTrue(wait_for(lambda: not gwd.pid_alive(vm.runner_pid), 10))
        self.assertIn("no record of the hand-over", self.a.logtext())
        self.assert_runs_on_b_only("gone-after-go")
        self.assertNotIn("vm=gone-after-go: crashed", self.a.logtext())
        got, details = code_of(lambda: self.call(self.a, "StartVm", api.StartVmRequest(name="gone-after-go")))
        self.assertEqual(got, grpc.StatusCode.NOT_FOUND, details)
        self.cleanup_vm("gone-after-go")

    def test_moved_while_the_source_daemon_was_down(self):
        vm = self.start("gone-unseen", restart_policy=api.RestartPolicy(kind=api.RestartPolicy.ON_CRASH))
        job = self.migrate("gone-unseen", bandwidth_limit_bytes_per_s=4 << 20)
        self.wait_precopy(job.id)
        self.a.stop(signal.SIGKILL)
        self.assertTrue(wait_for(lambda: not gwd.pid_alive(vm.runner_pid), 90), "the source runner never left")
        self.a.start()
        j = self.final_job(self.a, job.id)
        self.assertEqual(j.state, api.Job.SUCCEEDED, j.error + self.a.logtext()[-3000:])
        self.assert_runs_on_b_only("gone-unseen")
        self.assertNotIn("vm=gone-unseen: crashed", self.a.logtext())
        self.cleanup_vm("gone-unseen")

    def test_runner_killed_before_go_restarts_here(self):
        # The same question when the runner dies mid-copy: the destination never had the VM,
        # so it is an ordinary crash here and the restart policy brings it back.
        vm = self.start("killed-mid-copy", restart_policy=api.RestartPolicy(kind=api.RestartPolicy.ON_CRASH))
        job = self.migrate("killed-mid-copy", bandwidth_limit_bytes_per_s=4 << 20)
        self.wait_precopy(job.id)
        os.kill(vm.runner_pid, signal.SIGKILL)
        t0 = time.monotonic()
        j = self.final_job(self.a, job.id)
        self.assertEqual(j.state, api.Job.FAILED, j.error)
        self.assertIn("host-a", j.error)   # the job says where the VM is
        self.assert_runs_on_a_only("killed-mid-copy")
        print("runner killed mid-copy: running again on host-a after %.1f s" % (time.monotonic() - t0),
              file=sys.stderr)
        self.assertNotEqual(self.vm(self.a, "killed-mid-copy").runner_pid, vm.runner_pid)
        self.cleanup_vm("killed-mid-copy")


def main():
    return gwd.run_suite(globals())


if __name__ == "__main__":
    sys.exit(main())
