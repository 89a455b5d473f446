#!/usr/bin/python3
"""The backup API of godwitd (godwit.v1.GodwitBackup, docs/backups.md) with a real daemon, real
runner VMs, a local directory target and a real throw-away Ceph cluster (scripts/ceph-cluster):
a running dirtier backed up as a job with progress (WatchJob), listed, shown, verified with 0
bad chunks, restored as a clone that runs on with the backup's memory digest and 0 verify
errors, deleted; the CLI (`godwit backup ...`, `godwit job watch`) on the same; errors with
their reasons (unknown target or VM, hostile and huge values, a VM not running, a second
backup of a busy VM); a runner killed with -9 mid-backup: the job fails naming the exit,
nothing is listed, no manifest is left, the supervisor restarts the VM and its guest runs.
RestoreApi (no Ceph): a disk guest restored through the API into an image the daemon makes,
its blocks verifying at the point in time, with progress in WatchJob; a failed disk restore
leaves no VM and no image; an instant restore (`godwit backup restore --instant`) whose VM runs
before the job ends and stops with the backup's digest and 0 verify errors; its cancel; hostile
names, pools and images refused with their reasons.

    /usr/bin/python3 tests/daemon/test_backup_api.py [BUILD_DIR] [-k NAME]

Skips (77) without python3-grpcio or a usable /dev/kvm."""
import glob
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwd  # noqa: E402
from gwd import AUTH, TOKEN, grpc, wait_for  # noqa: E402
from test_cluster import error_reason  # noqa: E402

api, api_grpc, hpb, hgrpc = gwd.stubs()
bk, bk_grpc = gwd.backup_stubs()
BIN = gwd.build_dir()
CLUSTER = os.path.join(gwd.ROOT, "scripts", "ceph-cluster")
FINAL = (api.Job.SUCCEEDED, api.Job.FAILED, api.Job.CANCELLED)


def start_cluster():
    r = subprocess.run([CLUSTER, "start", "--store", "memstore"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError("ceph-cluster start failed:\n" + r.stdout + r.stderr)
    return r.stdout.strip().splitlines()[-1]


class BackupApi(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ceph = start_cluster()
        cls.tmp = tempfile.mkdtemp(prefix="gw-bkapi-")
        cls.store = os.path.join(cls.tmp, "store")
        cls.metrics_port = gwd.free_port()
        ns = "api%d" % (int(time.time() * 1e6) % 10**9)
        cls.images = os.path.join(cls.tmp, "images")
        os.mkdir(cls.images)
        extra = ("metrics_listen = 127.0.0.1:%d\n"
                 "image_roots = %s\nrbd_pools = godwit\nrbd_conf = %s\n"
                 "[backup_target local]\nstore = dir:%s\n"
                 "[backup_target bad]\nstore = dir:%s-bad\n"
                 "[backup_target ceph]\nstore = rados:godwit/%s\nceph_conf = %s\nosd_op_timeout = 20\n"
                 "mon_op_timeout = 20\ninflight = 16\n" % (cls.metrics_port, cls.images, cls.ceph, cls.store, cls.store, ns,
                                                     cls.ceph))
        cls.d = gwd.Daemon(BIN, "host-a", extra=extra)
        cls.b = bk_grpc.GodwitBackupStub(cls.d.channel)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "d", None):
            cls.d.cleanup()
        if getattr(cls, "ceph", None):
            subprocess.run([CLUSTER, "stop", cls.ceph], capture_output=True, timeout=120)
        if getattr(cls, "tmp", None):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- helpers ----
    def call(self, method, req, timeout=60):
        stub = self.b if hasattr(self.b, method) else self.d.stub
        return getattr(stub, method)(req, metadata=AUTH, timeout=timeout)

    def vm(self, name):
        return self.call("GetVm", api.GetVmRequest(name=name)).vm

    def make_vm(self, name, memory=128 << 20, guest="dirtier:ws=48M,rate=8M,pattern=random", pages=1, **kw):
        """A running VM whose guest has written at least `pages` pages (its first pass over the
        working set runs at full speed: a backup then has that much to read)."""
        v = self.call("CreateVm", api.CreateVmRequest(name=name, memory_bytes=memory, vcpus=1, guest=guest,
                                                        start=True, **kw)).vm
        self.assertEqual(v.state, api.Vm.RUNNING)
        self.assertTrue(wait_for(lambda: self.vm(name).counters.pages_written >= pages, 60))
        return v

    def drop_vm(self, name):
        try:
            self.call("DeleteVm", api.DeleteVmRequest(name=name, force=True))
        except grpc.RpcError:
            pass

    def disk_vm(self, name):
        """A running disk guest (64 MiB) on a 16 MiB image in the image root."""
        img = os.path.join(self.images, name + ".img")
        with open(img, "wb") as f:
            f.truncate(16 << 20)
        self.make_vm(name, memory=64 << 20, guest="disk", disk_path=img, pages=0)
        time.sleep(2.0)   # blocks written
        return img

    def watch(self, jid, timeout=300):
        """Every event of the job until its final one."""
        evs = list(self.d.stub.WatchJob(api.WatchJobRequest(id=jid), metadata=AUTH, timeout=timeout))
        self.assertIn(evs[-1].job.state, FINAL)
        return evs

    def final(self, jid, timeout=300):
        return wait_for(lambda: (lambda j: j if j.state in FINAL else None)(
            self.call("GetJob", api.GetJobRequest(id=jid)).job), timeout, 0.2)

    def exit_summary(self, name):
        with open(os.path.join(self.d.dir, "state", "vms", name, "runner.out")) as f:
            lines = [l for l in f.read().splitlines() if l.startswith("{")]
        return json.loads(lines[-1])

    def cli(self, *args):
        return subprocess.run([os.path.join(BIN, "godwit"), "--addr", self.d.addr, "--token", TOKEN] + list(args),
                              capture_output=True, text=True, timeout=300)

    # ---- tests ----
    def roundtrip(self, target):
        src, clone = "web-" + target, "clone-" + target
        self.make_vm(src)
        try:
            j = self.call("CreateBackup", bk.CreateBackupRequest(vm=src, target=target, request_id="rt-" + target)).job
            self.assertEqual(j.kind, api.Job.BACKUP)
            evs = self.watch(j.id)
            done = evs[-1].job
            self.assertEqual(done.state, api.Job.SUCCEEDED, done.error)
            self.assertEqual(done.backup.target, target)
            self.assertEqual(done.backup.cpu_priority, "batch:10")   # the host's default, as the runner read it back
            self.assertTrue(done.backup.backup_id)
            self.assertEqual(len(done.backup.memory_digest), 32)
            p = done.progress
            self.assertGreater(p.backup_bytes_read, 2 << 20)           # what the guest wrote was read
            self.assertLessEqual(p.backup_bytes_read, 128 << 20)
            self.assertGreater(p.backup_bytes_written, 1 << 20)        # and stored (first backup)
            self.assertEqual(p.backup_chunks, p.backup_chunks_total)
            self.assertGreater(p.backup_chunks, 0)
            self.assertTrue(any(e.job.state == api.Job.RUNNING for e in evs))
            # A retry of the same request is the same job, not a second backup.
            again = self.call("CreateBackup", bk.CreateBackupRequest(vm=src, target=target, request_id="rt-" + target)).job
            self.assertEqual(again.id, j.id)

            listed = self.call("ListBackups", bk.ListBackupsRequest(target=target, vm=src)).backups
            self.assertEqual([b.id for b in listed], [done.backup.backup_id])
            shown = self.call("GetBackup", bk.GetBackupRequest(target=target, vm=src)).backup
            self.assertEqual(shown.id, done.backup.backup_id)
            self.assertEqual(shown.memory_digest, done.backup.memory_digest)
            self.assertEqual((shown.memory_bytes, shown.vcpus, shown.method), (128 << 20, 1, "wp"))

            v = self.call("VerifyBackup", bk.VerifyBackupRequest(target=target, vm=src)).job
            vj = self.watch(v.id)[-1].job
            self.assertEqual(vj.state, api.Job.SUCCEEDED, vj.error)
            self.assertEqual((vj.backup.bad_chunks, vj.backup.bad_manifests), (0, 0))
            self.assertGreater(vj.progress.backup_bytes_read, 0)
            self.assertEqual(vj.progress.backup_chunks, vj.progress.backup_chunks_total)   # every chunk checked
            self.assertGreater(vj.progress.backup_chunks, 0)
            self.assertEqual(vj.progress.remaining_bytes, 0)

            r = self.call("RestoreBackup", bk.RestoreBackupRequest(target=target, vm=src, name=clone)).job
            rj = self.watch(r.id)[-1].job
            self.assertEqual(rj.state, api.Job.SUCCEEDED, rj.error)
            self.assertEqual(rj.backup.new_vm, clone)
            c = self.vm(clone)
            self.assertEqual((c.state, c.memory_bytes), (api.Vm.RUNNING, 128 << 20))
            before = self.vm(clone).counters.pages_written
            self.assertTrue(wait_for(lambda: self.vm(clone).counters.pages_written > before, 20))  # it runs on
            self.call("StopVm", api.StopVmRequest(name=clone))
            s = self.exit_summary(clone)
            self.assertEqual(s["memory_digest"], done.backup.memory_digest)
            self.assertEqual(s["guest_verify_errors"], 0)
            self.assertEqual(s["backup"], done.backup.backup_id)

            self.call("DeleteBackup", bk.DeleteBackupRequest(target=target, vm=src, id=done.backup.backup_id))
            self.assertEqual(list(self.call("ListBackups", bk.ListBackupsRequest(target=target, vm=src)).backups), [])
            # The source ran through all of it.
            self.assertEqual(self.vm(src).state, api.Vm.RUNNING)
            self.assertEqual(self.vm(src).counters.verify_errors, 0)
        finally:
            self.drop_vm(clone)
            self.drop_vm(src)

    def test_roundtrip_dir(self):
        self.roundtrip("local")
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=10) as r:
            text = r.read().decode()
        written = [l for l in text.splitlines() if l.startswith('godwit_backup_bytes_total{kind="written"}')]
        self.assertTrue(written and int(written[0].split()[-1]) > 1 << 20, text)
        self.assertRegex(text, r'godwit_backups_total\{result="succeeded"\} [1-9]')

    def test_roundtrip_ceph(self):
        self.roundtrip("ceph")

    def test_disk_restore_to_rbd(self):
        """A disk guest's backup restored into a new RBD image of the host's pool: the VM runs on
        rbd:godwit/NAME and reads its blocks back; a restore onto the image again fails, no VM made."""
        src, clone = "rbdsrc", "rbdclone-%d" % (int(time.time() * 1000) % 10**6)
        self.disk_vm(src)
        try:
            # A restore that fails (every chunk of its backup damaged) removes the RBD image it
            # made: the good restore below creates the same image anew.
            j = self.call("CreateBackup", bk.CreateBackupRequest(vm=src, target="bad", parent="none")).job
            self.assertEqual(self.watch(j.id)[-1].job.state, api.Job.SUCCEEDED)
            chunks = glob.glob(os.path.join(self.store + "-bad", "chunks", "*", "c.*"))
            self.assertTrue(chunks)
            for c in chunks:
                with open(c, "r+b") as f:
                    data = bytearray(f.read())
                    data[len(data) // 2] ^= 0xFF
                    f.seek(0)
                    f.write(data)
            r = self.call("RestoreBackup", bk.RestoreBackupRequest(target="bad", vm=src, name=clone,
                                                                   disk_pool="godwit")).job
            f = self.final(r.id)
            self.assertEqual((f.state, f.reason), (api.Job.FAILED, "RESTORE_FAILED"), f.error)
            self.assertEqual(error_reason(lambda: self.vm(clone))[0], grpc.StatusCode.NOT_FOUND)
            j = self.call("CreateBackup", bk.CreateBackupRequest(vm=src, target="local", parent="none")).job
            b = self.watch(j.id)[-1].job
            self.assertEqual(b.state, api.Job.SUCCEEDED, b.error)
            r = self.call("RestoreBackup", bk.RestoreBackupRequest(target="local", vm=src, name=clone,
                                                                   disk_pool="godwit")).job
            done = self.watch(r.id)[-1].job
            self.assertEqual(done.state, api.Job.SUCCEEDED, done.error)
            self.assertEqual(done.backup.disk, "rbd:godwit/" + clone)
            self.assertEqual(self.vm(clone).disk_path, "rbd:godwit/" + clone)
            time.sleep(3.0)
            self.call("StopVm", api.StopVmRequest(name=clone))
            s = self.exit_summary(clone)
            self.assertEqual(s["memory_digest"], b.backup.memory_digest)
            self.assertEqual((s["disk_verify_errors"], s["disk_io_errors"]), (0, 0), s)
            self.assertGreater(s["disk_blocks_read"], 100, s)
            # Its record gone, its image stays: a second restore under the name fails on the
            # existing image and leaves it (and no VM) as it was.
            self.drop_vm(clone)
            r = self.call("RestoreBackup", bk.RestoreBackupRequest(target="local", vm=src, name=clone,
                                                                   disk_pool="godwit")).job
            f = self.final(r.id)
            self.assertEqual((f.state, f.reason), (api.Job.FAILED, "RESTORE_FAILED"), f.error)
            self.assertIn("exists", f.error)
            self.assertEqual(error_reason(lambda: self.vm(clone))[0], grpc.StatusCode.NOT_FOUND)
        finally:
            self.drop_vm(clone)
            self.drop_vm(src)

    def test_instant_restore_to_rbd(self):
        """RestoreBackup{instant, disk_pool}: the VM runs at once on a new RBD image of the host's
        pool, which fills behind its disk; the job ends with the fill, the blocks verify."""
        src, clone = "rbdisrc", "rbdiclone-%d" % (int(time.time() * 1000) % 10**6)
        self.disk_vm(src)
        try:
            j = self.call("CreateBackup", bk.CreateBackupRequest(vm=src, target="local", parent="none")).job
            b = self.watch(j.id)[-1].job
            self.assertEqual(b.state, api.Job.SUCCEEDED, b.error)
            r = self.call("RestoreBackup", bk.RestoreBackupRequest(target="local", vm=src, name=clone, instant=True,
                                                                   disk_pool="godwit")).job
            done = self.watch(r.id)[-1].job
            self.assertEqual(done.state, api.Job.SUCCEEDED, done.error)
            self.assertEqual((done.backup.disk, self.vm(clone).disk_path), ("rbd:godwit/" + clone,) * 2)
            self.assertEqual(done.progress.backup_chunks, done.progress.backup_chunks_total)
            time.sleep(2.0)
            self.call("StopVm", api.StopVmRequest(name=clone))
            s = self.exit_summary(clone)
            self.assertEqual(s["instant_phase"], "complete", s)
            self.assertGreater(s["instant_disk_chunks_total"], 0, s)
            self.assertEqual(s["instant_disk_chunks_done"], s["instant_disk_chunks_total"])
            self.assertEqual(s["instant_memory_digest"], b.backup.memory_digest)
            self.assertEqual((s["disk_verify_errors"], s["disk_io_errors"], s["guest_verify_errors"]), (0, 0, 0), s)
            self.assertGreater(s["disk_blocks_read"], 100, s)
            # Stopped after its fill, the image stays the VM's (the runner removes only one it
            # made and did not fill): the VM starts again on it.
            info = subprocess.run(["rbd", "-c", self.ceph, "info", "godwit/" + clone], capture_output=True, text=True,
                                  timeout=60)
            self.assertEqual(info.returncode, 0, info.stderr)
            self.call("StartVm", api.StartVmRequest(name=clone))
            self.assertTrue(wait_for(lambda: self.vm(clone).state == api.Vm.RUNNING, 30))
            time.sleep(1.0)
            self.call("StopVm", api.StopVmRequest(name=clone))
            s = self.exit_summary(clone)
            self.assertEqual((s["disk_verify_errors"], s["disk_io_errors"]), (0, 0), s)
            self.assertGreater(s["disk_blocks_written"], 0, s)
        finally:
            self.drop_vm(clone)
            self.drop_vm(src)

    def test_cli(self):
        self.make_vm("cli1", memory=64 << 20, guest="dirtier:ws=16M,rate=4M")
        try:
            r = self.cli("backup", "create", "cli1", "--target", "local", "--watch")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("succeeded", r.stdout)
            r = self.cli("--json", "backup", "list", "cli1", "--target", "local")
            self.assertEqual(r.returncode, 0, r.stderr)
            ids = [b["id"] for b in json.loads(r.stdout.strip().splitlines()[-1])["backups"]]
            self.assertEqual(len(ids), 1)
            r = self.cli("backup", "show", "cli1", "--target", "local")
            self.assertIn(ids[0], r.stdout)
            # A verify started without --watch, followed with `godwit job watch`.
            r = self.cli("--json", "backup", "verify", "cli1", "--target", "local")
            self.assertEqual(r.returncode, 0, r.stderr)
            jid = json.loads(r.stdout.strip().splitlines()[-1])["job"]["id"]
            r = self.cli("job", "watch", jid)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            r = self.cli("job", "show", jid)
            self.assertIn("kind:          verify", r.stdout)
            self.assertIn("bad:           0 chunks, 0 manifests", r.stdout)
            r = self.cli("backup", "targets")
            self.assertIn("ceph", r.stdout)
            self.assertIn("rados", r.stdout)
            r = self.cli("backup", "show", "cli1", "--target", "nowhere")
            self.assertEqual(r.returncode, 3, r.stderr)                 # not found
            r = self.cli("backup", "delete", "cli1", "--target", "local", "--id", ids[0])
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            self.drop_vm("cli1")

    def refusals(self, vm):
        """What the API refuses whether or not VM vm exists: each request's own fields."""
        C = grpc.StatusCode
        self.assertEqual(error_reason(lambda: self.call("CreateBackup", bk.CreateBackupRequest(vm=vm, target="nope"))),
                         (C.NOT_FOUND, "UNKNOWN_TARGET"))
        self.assertEqual(error_reason(lambda: self.call("CreateBackup", bk.CreateBackupRequest(vm="ghost", target="local"))),
                         (C.NOT_FOUND, "VM_NOT_FOUND"))
        self.assertEqual(error_reason(lambda: self.call("ListBackups", bk.ListBackupsRequest(vm=vm, target="x" * 100000)))[0],
                         C.INVALID_ARGUMENT)
        hostile = [
            ("CreateBackup", bk.CreateBackupRequest(vm="../../etc", target="local")),
            ("CreateBackup", bk.CreateBackupRequest(vm=vm, target="local", method="fast")),
            ("CreateBackup", bk.CreateBackupRequest(vm=vm, target="local", parent="../x")),
            ("CreateBackup", bk.CreateBackupRequest(vm=vm, target="local", request_id="r" * 5000)),
            ("CreateBackup", bk.CreateBackupRequest(vm="v" * 70000, target="local")),
            ("GetBackup", bk.GetBackupRequest(vm=vm, target="local", id="../../m.x")),
            ("GetBackup", bk.GetBackupRequest(vm=vm, target="local", id="i" * 300)),
            ("DeleteBackup", bk.DeleteBackupRequest(vm=vm, target="local")),
            ("ListBackups", bk.ListBackupsRequest(vm=vm, target="local", page_token="/etc/passwd")),
            ("RestoreBackup", bk.RestoreBackupRequest(vm=vm, target="local", name="a/b")),
            ("RestoreBackup", bk.RestoreBackupRequest(vm=vm, target="local",
                                                      restart_policy=api.RestartPolicy(kind=99))),
            ("VerifyBackup", bk.VerifyBackupRequest(vm="", target="local")),
        ]
        for method, req in hostile:
            self.assertEqual(error_reason(lambda: self.call(method, req))[0], C.INVALID_ARGUMENT, (method, req))
        self.assertEqual(error_reason(lambda: self.call("GetBackup", bk.GetBackupRequest(vm=vm, target="local"))),
                         (C.NOT_FOUND, "BACKUP_NOT_FOUND"))
        # A restore of a VM without backups fails as a job, with its reason; nothing is created.
        j = self.call("RestoreBackup", bk.RestoreBackupRequest(vm="ghost", target="local", name="ghost2")).job
        j = self.final(j.id)
        self.assertEqual((j.state, j.reason), (api.Job.FAILED, "BACKUP_NOT_FOUND"), j.error)
        self.assertEqual(error_reason(lambda: self.vm("ghost2"))[0], C.NOT_FOUND)

    @gwd.no_vm
    def test_refusals_without_a_vm(self):
        self.refusals("absent")

    def test_errors(self):
        C = grpc.StatusCode
        self.make_vm("err1", memory=64 << 20, guest="dirtier:ws=16M,rate=4M")
        try:
            self.refusals("err1")
            self.assertEqual(error_reason(lambda: self.call("RestoreBackup", bk.RestoreBackupRequest(vm="err1", target="local"))),
                             (C.ALREADY_EXISTS, "VM_EXISTS"))
            # A stopped VM cannot be backed up.
            self.call("StopVm", api.StopVmRequest(name="err1"))
            self.assertEqual(error_reason(lambda: self.call("CreateBackup", bk.CreateBackupRequest(vm="err1", target="local"))),
                             (C.FAILED_PRECONDITION, "VM_NOT_RUNNING"))
        finally:
            self.drop_vm("err1")

    def test_busy_and_cancel(self):
        self.make_vm("busy1", memory=512 << 20, guest="dirtier:ws=384M,rate=8M,pattern=random", pages=(384 << 20) >> 12)
        try:
            j = self.call("CreateBackup", bk.CreateBackupRequest(vm="busy1", target="local")).job
            self.assertEqual(error_reason(lambda: self.call("CreateBackup", bk.CreateBackupRequest(vm="busy1", target="local"))),
                             (grpc.StatusCode.FAILED_PRECONDITION, "VM_BUSY"))
            self.assertEqual(error_reason(lambda: self.call("StopVm", api.StopVmRequest(name="busy1")))[0],
                             grpc.StatusCode.FAILED_PRECONDITION)
            self.call("CancelJob", api.CancelJobRequest(id=j.id))
            f = self.final(j.id, 120)
            if f.state == api.Job.SUCCEEDED:
                self.skipTest("the backup finished before the cancel reached it")
            self.assertEqual((f.state, f.reason), (api.Job.CANCELLED, "CANCELLED"), f.error)
            self.assertEqual(list(self.call("ListBackups", bk.ListBackupsRequest(target="local", vm="busy1")).backups), [])
            self.assertEqual(self.vm("busy1").state, api.Vm.RUNNING)
            before = self.vm("busy1").counters.pages_written
            self.assertTrue(wait_for(lambda: self.vm("busy1").counters.pages_written > before, 20))
        finally:
            self.drop_vm("busy1")

    def test_runner_killed_mid_backup(self):
        name = "kill1"
        # 384 MiB to read: the first backup is still running when it is killed. Its rewrites
        # at 2 MiB/s, not 8: the second backup, of the restarted guest, must not fill its 128 MiB
        # side buffer before it has read those pages. At 8 MiB/s it did, twice in CI, where the
        # ASan backup (batch priority, a parallel test on the other core) read them in over 16 s.
        v = self.make_vm(name, memory=512 << 20, guest="dirtier:ws=384M,rate=2M,pattern=random",
                         restart_policy=api.RestartPolicy(kind=api.RestartPolicy.ON_CRASH, backoff_ms=100),
                         pages=(384 << 20) >> 12)
        try:
            pid = v.runner_pid
            j = self.call("CreateBackup", bk.CreateBackupRequest(vm=name, target="local")).job
            # Wait until chunks are being written, then kill the runner.
            self.assertTrue(wait_for(lambda: self.call("GetJob", api.GetJobRequest(id=j.id)).job.progress.backup_chunks > 0
                                     or self.call("GetJob", api.GetJobRequest(id=j.id)).job.state in FINAL, 60, 0.02))
            os.kill(pid, signal.SIGKILL)
            f = self.final(j.id, 60)
            if f.state == api.Job.SUCCEEDED:
                self.skipTest("the backup finished before the kill")
            self.assertEqual((f.state, f.reason), (api.Job.FAILED, "RUNNER_EXITED"), f.error)
            self.assertIn("signal 9", f.error + "|" + f.error.replace("SIGKILL", "signal 9"))
            self.assertEqual(list(self.call("ListBackups", bk.ListBackupsRequest(target="local", vm=name)).backups), [])
            self.assertEqual(glob.glob(os.path.join(self.store, "objects", "m.%s.*" % name)), [])
            # The supervisor restarts the VM and its guest runs.
            self.assertTrue(wait_for(lambda: (lambda x: x.state == api.Vm.RUNNING and x.runner_pid not in (0, pid))(
                self.vm(name)), 30, 0.1), self.vm(name))
            # Its first pass over the working set done, as make_vm waits for: a backup taken
            # while the guest still writes its 384 MiB at full speed may rightly fail with its
            # 128 MiB side buffer full.
            self.assertTrue(wait_for(lambda: self.vm(name).counters.pages_written >= (384 << 20) >> 12, 60))
            self.assertEqual(self.vm(name).counters.restarts, 1)
            # And a backup of it succeeds once its new runner has answered.
            def create():
                try:
                    return self.call("CreateBackup", bk.CreateBackupRequest(vm=name, target="local", parent="none")).job
                except grpc.RpcError as e:
                    self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION, e.details())
                    return None
            j = wait_for(create, 20, 0.2)
            self.assertTrue(j)
            f = self.final(j.id)
            self.assertEqual(f.state, api.Job.SUCCEEDED, (f.reason, f.error))
        finally:
            self.drop_vm(name)


class RestoreApi(unittest.TestCase):
    """RestoreBackup with a disk, its progress, instant restores and hostile restores: a daemon
    with image_roots and directory targets only (no Ceph: these run in seconds)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="gw-restore-")
        cls.images = os.path.join(cls.tmp, "images")
        os.mkdir(cls.images)
        cls.store = os.path.join(cls.tmp, "store")
        cls.bad = os.path.join(cls.tmp, "bad")
        # "slow" is the same store read by one worker: an instant restore's fill then takes long
        # enough to be seen from outside.
        # Backups and ordinary restores run at a CPU priority of the host's choosing (the default
        # is batch:10, see BackupApi.roundtrip).
        extra = ("image_roots = %s\nbackup_cpu_priority = batch:15\nbackup_side_limit = 48M\n"
                 "[backup_target local]\nstore = dir:%s\n"
                 "[backup_target slow]\nstore = dir:%s\ninflight = 1\n"
                 "[backup_target bad]\nstore = dir:%s\n"
                 "[backup_target outage]\nstore = dir:%s/outage\n" % (cls.images, cls.store, cls.store, cls.bad, cls.tmp))
        cls.d = gwd.Daemon(BIN, "host-r", extra=extra)
        cls.b = bk_grpc.GodwitBackupStub(cls.d.channel)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "d", None):
            cls.d.cleanup()
        if getattr(cls, "tmp", None):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    call, vm, make_vm, drop_vm, disk_vm, watch, final, exit_summary, cli = (
        BackupApi.call, BackupApi.vm, BackupApi.make_vm, BackupApi.drop_vm, BackupApi.disk_vm, BackupApi.watch,
        BackupApi.final, BackupApi.exit_summary, BackupApi.cli)

    @gwd.no_vm
    def test_deleted_vm_takes_its_run_records(self):
        """A label policy's run records of a VM go when the VM is deleted (before stop 29 they
        stayed for good, and past 4,096 rows the loader dropped policies silently); another
        VM's records, whose name only starts the same, stay."""
        import sqlite3
        db = os.path.join(self.d.dir, "state", "godwit.db")
        self.d.stop()
        with sqlite3.connect(db) as c:
            for vm in ("rr", "rrx"):
                rec = bk.BackupPolicy(vm=vm, label="tier=web", last_job="job-old").SerializeToString()
                c.execute("INSERT OR REPLACE INTO backup_policies (vm, record) VALUES (?, ?)", (vm + "@tier=web", rec))
        self.d.start()
        self.b = bk_grpc.GodwitBackupStub(self.d.channel)
        type(self).b = self.b
        self.call("CreateVm", api.CreateVmRequest(name="rr", memory_bytes=64 << 20, vcpus=1, start=False))
        self.call("DeleteVm", api.DeleteVmRequest(name="rr"))
        self.d.stop()
        with sqlite3.connect(db) as c:
            keys = sorted(k for (k,) in c.execute("SELECT vm FROM backup_policies WHERE vm LIKE 'rr%'"))
            c.execute("DELETE FROM backup_policies WHERE vm LIKE 'rr%'")
        self.d.start()
        self.b = bk_grpc.GodwitBackupStub(self.d.channel)
        type(self).b = self.b
        self.assertEqual(keys, ["rrx@tier=web"])

    def cli_tty(self, *args):
        """The CLI with its stdout on a terminal (a pty): (exit code, what it printed)."""
        master, slave = pty.openpty()
        p = subprocess.Popen([os.path.join(BIN, "godwit"), "--addr", self.d.addr, "--token", TOKEN] + list(args),
                             stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:   # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        return p.wait(timeout=300), out.decode(errors="replace")

    def backup(self, vm, target="local"):
        j = self.call("CreateBackup", bk.CreateBackupRequest(vm=vm, target=target, parent="none")).job
        done = self.watch(j.id)[-1].job
        self.assertEqual(done.state, api.Job.SUCCEEDED, done.error)
        return done.backup

    def test_backup_cpu_priority(self):
        """backup_cpu_priority: every backup's threads and every ordinary restore's run at it (read
        back from the kernel by the runner); a value the daemon does not know stops it at start."""
        src, clone = "prio", "prio-clone"
        self.make_vm(src, memory=64 << 20, guest="dirtier:ws=16M,rate=4M")
        try:
            b = self.backup(src)
            self.assertEqual(b.cpu_priority, "batch:15")
            # The host's backup_side_limit reached the runner: the job says what bounded the
            # write-protect side buffer, and the most it held.
            self.assertEqual(b.side_limit, 48 << 20)
            self.assertLessEqual(b.side_peak_bytes, 48 << 20)
            r = self.call("RestoreBackup", bk.RestoreBackupRequest(target="local", vm=src, name=clone)).job
            done = self.watch(r.id)[-1].job
            self.assertEqual(done.state, api.Job.SUCCEEDED, done.error)
            self.assertEqual(done.backup.cpu_priority, "batch:15")
            argv = []
            for pid in self.d.vm_runners(clone):
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            self.assertEqual(argv[argv.index("--cpu-priority") + 1], "batch:15", argv)
            self.call("StopVm", api.StopVmRequest(name=clone))
            s = self.exit_summary(clone)
            self.assertEqual(s["restore_cpu_priority"], "batch:15", s)
            self.assertEqual(s["memory_digest"], b.memory_digest)
        finally:
            self.drop_vm(clone)
            self.drop_vm(src)
        for bad in ("low", "nice:0", "batch:20"):
            with self.assertRaises(AssertionError) as cm:
                gwd.Daemon(BIN, "host-bad", extra="backup_cpu_priority = %s\n" % bad)
            self.assertIn("bad value for backup_cpu_priority", str(cm.exception))

    def test_disk_restore_with_progress(self):
        src, clone = "rdisk", "rdisk-clone"
        self.disk_vm(src)
        try:
            b = self.backup(src)
            shown = self.call("GetBackup", bk.GetBackupRequest(target="local", vm=src, id=b.backup_id)).backup
            self.assertEqual(shown.disk_bytes, 16 << 20)
            req = bk.RestoreBackupRequest(target="local", vm=src, name=clone, request_id="rdisk-1")
            r = self.call("RestoreBackup", req).job
            evs = self.watch(r.id)
            done = evs[-1].job
            self.assertEqual(done.state, api.Job.SUCCEEDED, done.error)
            # A retry is the same job, not a refusal because of the image that job made.
            self.assertEqual(self.call("RestoreBackup", req).job.id, r.id)
            img = os.path.join(os.path.realpath(self.images), clone + ".img")
            self.assertEqual(done.backup.disk, img)
            self.assertEqual(os.path.getsize(img), 16 << 20)
            # Progress while the runner read the store: chunks, bytes read and written, throughput.
            running = [e.job.progress for e in evs if e.job.state == api.Job.RUNNING and e.job.progress.backup_chunks_total]
            self.assertTrue(running, [str(e.job.progress) for e in evs])
            last = running[-1]
            self.assertEqual(last.backup_chunks, last.backup_chunks_total)
            self.assertGreater(last.backup_bytes_read, 0)
            self.assertGreater(last.backup_bytes_written, 1 << 20)   # memory and disk data placed
            self.assertGreater(last.throughput_bytes_per_s, 0)
            self.assertEqual(last.total_bytes, (64 << 20) + (16 << 20))
            for p in running:
                if p.backup_chunks < p.backup_chunks_total:   # a frame from mid-restore carries an ETA
                    self.assertGreater(p.remaining_bytes, 0)
                    self.assertGreater(p.eta_ms, 0)
            self.assertEqual(done.progress.backup_chunks, done.progress.backup_chunks_total)
            # The new VM runs on its new image; its guest reads back the blocks of the point in time.
            v = self.vm(clone)
            self.assertEqual((v.state, v.disk_path), (api.Vm.RUNNING, img))
            r = self.cli("job", "show", done.id)
            self.assertIn("disk:          " + img, r.stdout)
            time.sleep(3.0)
            self.call("StopVm", api.StopVmRequest(name=clone))
            s = self.exit_summary(clone)
            self.assertEqual(s["memory_digest"], b.memory_digest)
            self.assertEqual((s["disk_verify_errors"], s["disk_io_errors"], s["guest_verify_errors"]), (0, 0, 0), s)
            self.assertGreater(s["disk_blocks_read"], 100, s)
            # The CLI: a restore followed with --watch on a terminal draws the progress line.
            rc, out = self.cli_tty("backup", "restore", src, "--target", "local", "--name", clone + "-cli", "--watch")
            self.assertEqual(rc, 0, out)
            self.assertRegex(out, r"read .* of .* written .* chunks (\d+)/\1 .*/s  ETA ")
            self.assertIn("succeeded", out)
            self.assertTrue(os.path.exists(os.path.join(self.images, clone + "-cli.img")))
            # The same name again: its image exists now (the VM too), refused before any job.
            self.drop_vm(clone)
            self.assertEqual(error_reason(lambda: self.call("RestoreBackup", bk.RestoreBackupRequest(
                target="local", vm=src, name=clone))), (grpc.StatusCode.ALREADY_EXISTS, "IMAGE_EXISTS"))
        finally:
            self.drop_vm(clone + "-cli")
            self.drop_vm(clone)
            self.drop_vm(src)

    def test_failed_disk_restore_leaves_nothing(self):
        src, clone = "rfail", "rfail-clone"
        self.disk_vm(src)
        try:
            self.backup(src, "bad")
            chunks = glob.glob(os.path.join(self.bad, "chunks", "*", "c.*"))
            self.assertTrue(chunks)
            for c in chunks:   # every chunk damaged: the restore fails on its first read
                with open(c, "r+b") as f:
                    data = bytearray(f.read())
                    data[len(data) // 2] ^= 0xFF
                    f.seek(0)
                    f.write(data)
            r = self.call("RestoreBackup", bk.RestoreBackupRequest(target="bad", vm=src, name=clone)).job
            f = self.final(r.id)
            self.assertEqual((f.state, f.reason), (api.Job.FAILED, "RESTORE_FAILED"), f.error)
            self.assertIn("chunk", f.error)
            self.assertEqual(error_reason(lambda: self.vm(clone))[0], grpc.StatusCode.NOT_FOUND)
            self.assertFalse(os.path.lexists(os.path.join(self.images, clone + ".img")))
        finally:
            self.drop_vm(clone)
            self.drop_vm(src)

    def test_instant_restore_cli(self):
        src, clone = "rinst", "rinst-clone"
        self.make_vm(src, memory=128 << 20, guest="dirtier:ws=112M,rate=8M,pattern=random", pages=(112 << 20) >> 12)
        try:
            b = self.backup(src)
            r = self.cli("--json", "backup", "restore", src, "--target", "slow", "--name", clone, "--instant")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            jid = json.loads(r.stdout.strip().splitlines()[-1])["job"]["id"]
            seen_running = []
            evs = []
            for e in self.d.stub.WatchJob(api.WatchJobRequest(id=jid), metadata=AUTH, timeout=300):
                evs.append(e)
                p = e.job.progress
                if e.job.state == api.Job.RUNNING and p.backup_chunks_total and p.backup_chunks < p.backup_chunks_total:
                    # The fill is under way and the VM already runs.
                    seen_running.append((self.vm(clone).state, p.backup_chunks, p.backup_chunks_total,
                                         e.job.backup.instant))
            done = evs[-1].job
            self.assertEqual(done.state, api.Job.SUCCEEDED, done.error)
            self.assertTrue(seen_running, [str(e.job) for e in evs])
            self.assertTrue(all(s[0] == api.Vm.RUNNING and s[3] for s in seen_running), seen_running)
            self.assertEqual(done.progress.backup_chunks, done.progress.backup_chunks_total)
            self.assertEqual(done.progress.remaining_bytes, 0)
            self.assertGreater(done.progress.backup_bytes_read, 0)
            self.assertTrue(done.backup.instant)
            # The CLI follows and shows it (it has ended: watch returns at once with its outcome).
            r = self.cli("job", "watch", jid)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            r = self.cli("job", "show", jid)
            self.assertIn("(instant restore)", r.stdout)
            # Now an ordinary VM: it runs on, and stops with the backup's memory digest.
            v = self.vm(clone)
            self.assertEqual(v.state, api.Vm.RUNNING)
            before = v.counters.pages_written
            self.assertTrue(wait_for(lambda: self.vm(clone).counters.pages_written > before, 20))
            self.call("StopVm", api.StopVmRequest(name=clone))
            s = self.exit_summary(clone)
            self.assertEqual(s["instant_phase"], "complete")
            self.assertTrue(s["instant_digest_ok"])
            self.assertEqual(s["instant_memory_digest"], b.memory_digest)
            self.assertEqual(s["guest_verify_errors"], 0)
            # The guest ran before the fill was complete.
            self.assertGreater(s["instant_first_run_mono_ns"], 0)
            self.assertLess(s["instant_first_run_mono_ns"], s["instant_start_mono_ns"] + s["instant_fill_ms"] * 1e6, s)
        finally:
            self.drop_vm(clone)
            self.drop_vm(src)

    def test_instant_disk_restore(self):
        """A disk guest restored instantly: its image made by the daemon fills behind the device
        while the guest uses it; the job counts the disk's chunks and the blocks verify."""
        src, clone = "ridisk", "ridisk-clone"
        self.disk_vm(src)
        try:
            b = self.backup(src)
            self.call("StopVm", api.StopVmRequest(name=src))
            r = self.call("RestoreBackup", bk.RestoreBackupRequest(target="local", vm=src, name=clone, instant=True)).job
            done = self.watch(r.id)[-1].job
            self.assertEqual(done.state, api.Job.SUCCEEDED, done.error)
            self.assertEqual(done.backup.cpu_priority, "")   # the restored guest waits for its fill: not lowered
            img = os.path.join(os.path.realpath(self.images), clone + ".img")
            self.assertEqual((done.backup.disk, self.vm(clone).disk_path), (img, img))
            self.assertEqual(done.progress.backup_chunks, done.progress.backup_chunks_total)
            time.sleep(3.0)
            self.call("StopVm", api.StopVmRequest(name=clone))
            s = self.exit_summary(clone)
            self.assertGreater(s["instant_disk_chunks_total"], 0, s)
            self.assertEqual(s["instant_disk_chunks_done"], s["instant_disk_chunks_total"])
            # The job's chunks are memory's and the disk's.
            self.assertEqual(done.progress.backup_chunks_total, s["instant_chunks_total"] + s["instant_disk_chunks_total"])
            self.assertEqual(s["instant_memory_digest"], b.memory_digest)
            self.assertEqual((s["disk_verify_errors"], s["disk_io_errors"], s["guest_verify_errors"]), (0, 0, 0), s)
            self.assertGreater(s["disk_blocks_read"], 100, s)
        finally:
            self.drop_vm(clone)
            self.drop_vm(src)

    def test_instant_restore_store_outage(self):
        """The store gone under an instant restore: the job says so and the runner holds the VM
        paused; the store back, the fill completes and the job succeeds with the backup's digest."""
        src, clone = "rout", "rout-clone"
        self.make_vm(src, memory=64 << 20, guest="dirtier:ws=32M,rate=4M,pattern=random", pages=(32 << 20) >> 12)
        sdir = os.path.join(self.tmp, "outage")
        chunks, away = os.path.join(sdir, "chunks"), os.path.join(sdir, "chunks.away")
        moved = False
        try:
            b = self.backup(src, "outage")
            self.call("StopVm", api.StopVmRequest(name=src))
            os.rename(chunks, away)   # after the manifest: the job starts, the guest finds nothing
            moved = True
            j = self.call("RestoreBackup", bk.RestoreBackupRequest(target="outage", vm=src, name=clone, instant=True)).job
            evs = []
            t = threading.Thread(target=lambda: evs.extend(self.d.stub.WatchJob(
                api.WatchJobRequest(id=j.id), metadata=AUTH, timeout=120)))
            t.start()
            job = wait_for(lambda: (lambda x: x if x.progress.phase == "instant-stalled" or x.state in FINAL else None)(
                self.call("GetJob", api.GetJobRequest(id=j.id)).job), 30, 0.1)
            self.assertEqual((job.state, job.progress.phase), (api.Job.RUNNING, "instant-stalled"), job)
            self.assertEqual(self.vm(clone).state, api.Vm.RUNNING)
            sock = os.path.join(self.d.dir, "state", "vms", clone, "control.sock")
            st = json.loads(subprocess.run([os.path.join(BIN, "godwit-vm"), "status", "--control", sock, "--json"],
                                           capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[-1])
            self.assertEqual((st["state"], st["paused_by"]), ("paused", "store"), st)
            os.rename(away, chunks)
            moved = False
            t.join(120)
            done = evs[-1].job
            self.assertEqual(done.state, api.Job.SUCCEEDED, done.error)
            msgs = [e.message for e in evs]
            self.assertTrue(any("does not answer" in m and "paused" in m for m in msgs), msgs)
            self.assertTrue(any("answers again" in m for m in msgs), msgs)
            before = self.vm(clone).counters.pages_written
            self.assertTrue(wait_for(lambda: self.vm(clone).counters.pages_written > before, 20))   # it runs again
            self.call("StopVm", api.StopVmRequest(name=clone))
            s = self.exit_summary(clone)
            self.assertEqual(s["instant_memory_digest"], b.memory_digest)
            self.assertGreaterEqual(s["instant_stalls"], 1)
            self.assertEqual(s["guest_verify_errors"], 0)
        finally:
            if moved:
                os.rename(away, chunks)
            self.drop_vm(clone)
            self.drop_vm(src)

    def test_instant_restore_cancel(self):
        src, clone = "rcan", "rcan-clone"
        self.make_vm(src, memory=128 << 20, guest="dirtier:ws=112M,rate=8M,pattern=random", pages=(112 << 20) >> 12)
        try:
            self.backup(src)
            j = self.call("RestoreBackup", bk.RestoreBackupRequest(target="slow", vm=src, name=clone, instant=True)).job
            self.assertTrue(wait_for(lambda: self.call("GetJob", api.GetJobRequest(id=j.id)).job.progress.backup_chunks > 0
                                     or self.call("GetJob", api.GetJobRequest(id=j.id)).job.state in FINAL, 60, 0.02))
            self.call("CancelJob", api.CancelJobRequest(id=j.id))
            f = self.final(j.id, 60)
            if f.state == api.Job.SUCCEEDED:
                self.skipTest("the fill completed before the cancel reached it")
            self.assertEqual((f.state, f.reason), (api.Job.CANCELLED, "CANCELLED"), f.error)
            # The half-filled VM is discarded: no record, no runner.
            self.assertEqual(error_reason(lambda: self.vm(clone))[0], grpc.StatusCode.NOT_FOUND)
            self.assertEqual(self.vm(src).state, api.Vm.RUNNING)
        finally:
            self.drop_vm(clone)
            self.drop_vm(src)

    def test_hostile_restores(self):
        C = grpc.StatusCode
        self.make_vm("rhost", memory=64 << 20, guest="dirtier:ws=16M,rate=4M")
        try:
            for name in ("a/b", "..", "../../etc/x", ".hidden", "x" * 64, "-rf"):
                self.assertEqual(error_reason(lambda: self.call("RestoreBackup", bk.RestoreBackupRequest(
                    target="local", vm="rhost", name=name)))[0], C.INVALID_ARGUMENT, name)
            for pool in ("../x", "a/b", "p" * 100):
                self.assertEqual(error_reason(lambda: self.call("RestoreBackup", bk.RestoreBackupRequest(
                    target="local", vm="rhost", name="ok1", disk_pool=pool)))[0], C.INVALID_ARGUMENT, pool)
            self.assertEqual(error_reason(lambda: self.call("RestoreBackup", bk.RestoreBackupRequest(
                target="local", vm="rhost"))), (C.ALREADY_EXISTS, "VM_EXISTS"))
            # An image (or a link planted where it would go) is never overwritten.
            with open(os.path.join(self.images, "taken.img"), "wb") as f:
                f.write(b"precious")
            os.symlink("/etc/hostname", os.path.join(self.images, "linked.img"))
            for name in ("taken", "linked"):
                self.assertEqual(error_reason(lambda: self.call("RestoreBackup", bk.RestoreBackupRequest(
                    target="local", vm="rhost", name=name))), (C.ALREADY_EXISTS, "IMAGE_EXISTS"), name)
            with open(os.path.join(self.images, "taken.img"), "rb") as f:
                self.assertEqual(f.read(), b"precious")
            # RBD: this host has no rbd_pools, for an ordinary or an instant restore.
            for instant in (False, True):
                self.assertEqual(error_reason(lambda: self.call("RestoreBackup", bk.RestoreBackupRequest(
                    target="local", vm="rhost", name="ok2", disk_pool="vms", instant=instant))),
                    (C.FAILED_PRECONDITION, "RBD_DISK_REFUSED"), instant)
            r = self.cli("backup", "restore", "rhost", "--target", "local", "--name", "taken", "--instant")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("exists", r.stderr)
        finally:
            self.drop_vm("rhost")


def main():
    return gwd.run_suite(globals(), ("godwitd", "godwit-vm", "godwit"))


if __name__ == "__main__":
    sys.exit(main())
