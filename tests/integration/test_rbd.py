#!/usr/bin/env python3
"""Integration tests for VM disks on Ceph RBD (engine/vm/blk_rbd.c, backup/disk_rbd.c) with real
KVM guests and a real throw-away Ceph cluster (scripts/ceph-cluster) started by the suite:
the disk guest runs on rbd:POOL/IMAGE and every block it wrote verifies in the exported image;
a second runner on the same image is refused (RBD's exclusive lock), as are hostile specs;
a migration moves the guest without copying the disk (the lock hands over at GO), the
destination verifies its blocks, and the source cannot take the image back once the
destination holds it; backups start copy-before-write in the pause and take the RBD snapshot
after it (blocks written in between come from the fleecing area), incrementals read only what
the diff names, and restores to a new RBD image or to a raw file verify; an instant restore
into a new RBD image runs the guest while the image fills behind its disk.
Usage: test_rbd.py [path/to/godwit-vm] [TestClass]. Exit 77 when /dev/kvm or Ceph is missing."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

VM = gwtest.binary("godwit-vm")
os.environ.setdefault("GODWIT_VM", VM)
import test_disk  # noqa: E402  (the disk guest's block format and its checker)

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER = os.path.join(HERE, "..", "..", "scripts", "ceph-cluster")
IMAGE_BYTES = test_disk.IMAGE_BYTES
BLOCK = test_disk.BLOCK
SECRET = "test-cluster-secret-0123456789abcdefghij\n"


def require_ceph():
    missing = [b for b in ("ceph-mon", "ceph-osd", "ceph", "rbd", "monmaptool") if not shutil.which(b)]
    if missing:
        print("SKIP: Ceph binaries missing: " + " ".join(missing))
        sys.exit(gwtest.SKIP)


def test_hooks():
    r = gwtest.run([VM, "migrate", "--test-fault", "drop-go"], timeout=10)
    return "unrecognized option" not in r.stderr


class RbdBase(unittest.TestCase):
    conf = None

    @classmethod
    def setUpClass(cls):
        r = subprocess.run([CLUSTER, "start"], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError("ceph-cluster start failed:\n" + r.stdout + r.stderr)
        cls.conf = r.stdout.strip().splitlines()[-1]

    @classmethod
    def tearDownClass(cls):
        if cls.conf:
            subprocess.run([CLUSTER, "stop", cls.conf], capture_output=True, timeout=120)

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="godwit-rbd-")
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        shutil.rmtree(self.dir, ignore_errors=True)

    def rbd(self, *args, check=True):
        r = subprocess.run(["rbd", "-c", self.conf] + list(args), capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError("rbd %s failed: %s" % (" ".join(args), r.stderr))
        return r

    def new_image(self, name, size=IMAGE_BYTES):
        self.rbd("create", "godwit/" + name, "--size", "%dK" % (size >> 10))
        return self.spec(name)

    def spec(self, name):
        return "rbd:godwit/%s:conf=%s" % (name, self.conf)

    def export(self, name):
        path = os.path.join(self.dir, name + ".raw")
        self.rbd("export", "godwit/" + name, path)
        with open(path, "rb") as f:
            return f.read()

    def assert_blocks_verify(self, image, region=IMAGE_BYTES, min_gen=1):
        """Every block of the disk guest's region holds its header, and a spread sample
        (with the most rewritten block) verifies in full."""
        n = min(len(image), region) // BLOCK
        gens = []
        for i in range(n):
            magic, seed, block, gen, bb, _ = test_disk.parse_block(image[i * BLOCK:(i + 1) * BLOCK])
            self.assertEqual((magic, seed, block, bb), (test_disk.MAGIC, test_disk.SEED, i, BLOCK), "block %d" % i)
            self.assertGreaterEqual(gen, min_gen)
            gens.append(gen)
        for i in sorted(set(range(0, n, 97)) | {n - 1, gens.index(max(gens))}):
            self.assertEqual(test_disk.block_problems(image[i * BLOCK:(i + 1) * BLOCK], i), [], "block %d" % i)
        return gens

    def start(self, name, disk, *extra):
        r = gwtest.Runner(VM, ["run", "--name", name, "--memory", "64M", "--guest", "disk", "--disk", disk,
                               "--seconds", "120"] + list(extra), self.dir)
        self.procs.append(r.proc)
        deadline = time.time() + 60
        while time.time() < deadline:
            st = self.status(r.sock)
            if st and st.get("guest_ready"):
                return r
            time.sleep(0.1)
        raise AssertionError("guest never became ready")

    def status(self, sock):
        r = gwtest.run([VM, "status", "--control", sock, "--json"], timeout=10)
        return gwtest.last_json(r.stdout) if r.returncode == 0 else None

    def stop(self, runner):
        gwtest.run([VM, "stop", "--control", runner.sock])
        code, out, err = runner.finish()
        return code, gwtest.last_json(out), err

    def assert_healthy(self, code, j, err):
        self.assertEqual(code, 0, err)
        self.assertEqual(j["status"], "ok", j)
        self.assertEqual(j["disk_verify_errors"], 0, err)
        self.assertEqual(j["disk_io_errors"], 0, err)


class RbdDisk(RbdBase):
    def test_disk_guest_runs_on_rbd_and_blocks_verify(self):
        disk = self.new_image("run1")
        r = gwtest.run([VM, "run", "--memory", "64M", "--guest", "disk", "--disk", disk, "--seconds", "3", "--json"])
        j = gwtest.last_json(r.stdout)
        self.assert_healthy(r.returncode, j, r.stderr)
        self.assertGreater(j["disk_blocks_written"], IMAGE_BYTES // BLOCK)
        self.assertGreater(j["disk_blocks_read"], 500)
        gens = self.assert_blocks_verify(self.export("run1"))
        self.assertGreater(max(gens), 1)   # rewritten after the fill

    def test_one_writer_and_hostile_specs(self):
        disk = self.new_image("one1")
        first = self.start("one", disk)
        r = gwtest.run([VM, "run", "--memory", "64M", "--guest", "disk", "--disk", disk, "--seconds", "1", "--json"])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("in use: another VM or host holds its lock", r.stderr)
        code, j, err = self.stop(first)
        self.assert_healthy(code, j, err)
        # Once the first let go, the image is free again.
        r = gwtest.run([VM, "run", "--memory", "64M", "--guest", "disk", "--disk", disk, "--seconds", "1", "--json"])
        self.assert_healthy(r.returncode, gwtest.last_json(r.stdout), r.stderr)
        for spec, why in (("rbd:godwit/../etc", "want rbd:POOL/IMAGE"),
                          ("rbd:godwit/one1:conf=relative.conf", "bad option"),
                          ("rbd:godwit/one1:conf=%s:evil=1" % self.conf, "bad option"),
                          ("rbd:godwit/" + "x" * 200, "want rbd:POOL/IMAGE"),
                          ("rbd:godwit/absent:conf=%s" % self.conf, "no such image"),
                          ("rbd:nopool/one1:conf=%s" % self.conf, "no such pool")):
            r = gwtest.run([VM, "run", "--memory", "64M", "--guest", "disk", "--disk", spec, "--seconds", "1"])
            self.assertNotEqual(r.returncode, 0, spec)
            self.assertIn(why, r.stderr, spec)


class RbdMigration(RbdBase):
    def pair(self, disk, src_args=()):
        secret = os.path.join(self.dir, "secret")
        with open(secret, "w") as f:
            f.write(SECRET)
        self.dst_sock = os.path.join(self.dir, "dst.sock")
        dst = subprocess.Popen([VM, "incoming", "--listen", "tcp:127.0.0.1:0", "--secret-file", secret, "--control",
                                self.dst_sock, "--seconds", "3", "--json", "--disk", disk],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(dst)
        url = json.loads(dst.stdout.readline())["listening"]
        src = self.start("mig", disk, "--secret-file", secret, *src_args)
        return src, dst, url

    def migrate(self, src, url):
        r = gwtest.run([VM, "migrate", "--control", src.sock, "--to", url, "--wait", "--json"], timeout=120)
        return r.returncode, gwtest.last_json(r.stdout) if "{" in r.stdout else {}, r.stderr

    def test_migrate_without_disk_copy(self):
        disk = self.new_image("mig1")
        src, dst, url = self.pair(disk)
        time.sleep(1.0)
        code, final, err = self.migrate(src, url)
        self.assertEqual(code, 0, err)
        self.assertEqual(final["phase"], "completed", final)
        scode, sout, serr = src.finish()
        sj = gwtest.last_json(sout)
        self.assertEqual(sj["state"], "migrated", serr)
        # While the destination runs, the image is its own: nobody else may open it to write.
        r = gwtest.run([VM, "run", "--memory", "64M", "--guest", "disk", "--disk", disk, "--seconds", "1"])
        self.assertIn("in use: another VM or host holds its lock", r.stderr)
        out, derr = dst.communicate(timeout=60)
        dj = gwtest.last_json(out)
        self.assert_healthy(dst.returncode, dj, derr)
        self.assertGreater(dj["disk_blocks_read"], sj["disk_blocks_read"])
        self.assertGreater(dj["disk_blocks_written"], sj["disk_blocks_written"])
        self.assert_blocks_verify(self.export("mig1"))

    def test_source_cannot_take_the_image_back_after_handover(self):
        if not test_hooks():
            self.skipTest("needs a build with GODWIT_TEST_HOOKS")
        disk = self.new_image("mig2")
        src, dst, url = self.pair(disk, ("--test-fault", "close-after-go"))
        time.sleep(0.5)
        code, final, err = self.migrate(src, url)
        self.assertNotEqual(code, 0)
        self.assertEqual(final["phase"], "in-doubt", final)
        self.assertTrue(gwtest.wait_for_path(self.dst_sock), "the destination did not take the VM after GO")
        # The destination runs the guest and holds the image: the source cannot resume on it.
        r = gwtest.run([VM, "resolve", "--control", src.sock, "--keep-source", "--json"])
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("the disk is locked by another VM or host", r.stdout + r.stderr)
        st = self.status(src.sock)
        self.assertEqual(st["state"], "in-doubt", st)
        r = gwtest.run([VM, "resolve", "--control", src.sock, "--keep-destination", "--json"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out, derr = dst.communicate(timeout=60)
        self.assert_healthy(dst.returncode, gwtest.last_json(out), derr)
        self.assert_blocks_verify(self.export("mig2"))


class RbdBackup(RbdBase):
    """Backups of an RBD disk: the snapshot is the point in time, incrementals read the diff."""
    REGION = 64 << 20       # the disk guest writes at most this much (guest/workload_disk.c)
    SIZE = 128 << 20        # so half of this image is never written

    def backup(self, runner, store, *extra):
        r = gwtest.run([VM, "backup", "--control", runner.sock, "--json"] + store + list(extra), timeout=300)
        j = gwtest.last_json(r.stdout)
        self.assertTrue(j["ok"], j)
        self.assertEqual(r.returncode, 0, r.stderr)
        return j

    def snaps(self, name):
        r = self.rbd("snap", "ls", "godwit/" + name, "--format", "json")
        return sorted(x["name"] for x in json.loads(r.stdout or "[]"))

    def restore(self, store, vm, disk, name):
        return gwtest.run([VM, "restore-backup", "--vm", vm, "--name", name, "--disk", disk, "--seconds", "2",
                           "--json"] + store, timeout=300)

    def assert_clone_verifies(self, r, b):
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        j = gwtest.last_json(r.stdout)
        self.assert_healthy(r.returncode, j, r.stderr)
        # The guest's generation table (memory) and the disk come from one point in time:
        # every block it reads back verifies.
        self.assertEqual(j["memory_digest"], b["memory_digest"])
        self.assertGreater(j["disk_blocks_read"], 500)
        return j

    def test_backup_incremental_restore_to_rbd_and_file(self):
        disk = self.new_image("bk1", self.SIZE)
        store = ["--store", "rados:godwit/bk%d" % (int(time.time() * 1e6) % 10**9), "--ceph-conf", self.conf]
        src = self.start("bk1", disk)
        time.sleep(1.0)
        b1 = self.backup(src, store)
        self.assertEqual((b1["disk_bytes"], b1["disk_source"]), (self.SIZE, "rbd-snapshot"))
        self.assertEqual(b1["disk_read_bytes"], self.SIZE)
        self.assertLess(b1["pause_ms"], 2000)
        self.assertEqual(self.snaps("bk1"), ["godwit-" + b1["id"]])
        time.sleep(0.5)
        b2 = self.backup(src, store)
        # Only what changed since b1's snapshot is read: at most the guest's region.
        self.assertEqual(b2["disk_source"], "rbd-diff")
        self.assertGreater(b2["disk_read_bytes"], 0)
        self.assertLessEqual(b2["disk_read_bytes"], self.REGION)
        self.assertEqual(self.snaps("bk1"), ["godwit-" + b2["id"]])   # b1's snapshot went
        print("\n  full: read %d MiB, pause %.1f ms; incremental: read %d MiB, pause %.1f ms, %.0f ms" % (
            b1["disk_read_bytes"] >> 20, b1["pause_ms"], b2["disk_read_bytes"] >> 20, b2["pause_ms"], b2["elapsed_ms"]))
        listed = gwtest.last_json(gwtest.run([VM, "list-backups", "--vm", "bk1", "--json"] + store).stdout)
        self.assertEqual(listed["backups"][1]["parent"], b1["id"])
        v = gwtest.run([VM, "verify-backup", "--vm", "bk1", "--json"] + store)
        self.assertEqual(v.returncode, 0, v.stdout + v.stderr)

        # The incremental restores whole: to a new RBD image, and to a raw file.
        self.assert_clone_verifies(self.restore(store, "bk1", self.spec("bk1r"), "bk1r"), b2)
        self.assertEqual(self.snaps("bk1r"), [])
        raw = os.path.join(self.dir, "bk1.img")
        self.assert_clone_verifies(self.restore(store, "bk1", raw, "bk1f"), b2)
        self.assertEqual(os.path.getsize(raw), self.SIZE)
        # b1 (a full backup) restores too, to its own point in time.
        r = gwtest.run([VM, "restore-backup", "--vm", "bk1", "--backup", b1["id"], "--name", "bk1o", "--disk",
                        self.spec("bk1o"), "--seconds", "2", "--json"] + store, timeout=300)
        self.assert_clone_verifies(r, b1)
        # Never into an image that exists (it may be another VM's disk).
        r = self.restore(store, "bk1", disk, "bk1x")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("exists already", r.stderr)
        code, j, err = self.stop(src)
        self.assert_healthy(code, j, err)

    def test_backup_pause_holds_no_snapshot_and_fleeced_blocks_restore(self):
        """The RBD snapshot is made after the pause; blocks the guest writes between the pause
        and the snapshot come from the fleecing area, and the restore is the pause's disk."""
        small = 4 << 20   # 1024 blocks: the restored guest reads every one of them back in a few seconds
        disk = self.new_image("bk2", small)
        store = ["--store", "rados:godwit/bp%d" % (int(time.time() * 1e6) % 10**9), "--ceph-conf", self.conf]
        src = self.start("bk2", disk)
        time.sleep(1.0)
        runs = []
        # The disk guest writes every tick; a few backups make sure some of its writes fall
        # between a pause and its snapshot (the snapshot takes tens of milliseconds).
        for _ in range(6):
            runs.append(self.backup(src, store))
            if sum(b["fleece_blocks"] for b in runs) and len(runs) >= 3:
                break
            time.sleep(0.3)
        for b in runs:
            self.assertIn(b["disk_source"], ("rbd-snapshot", "rbd-diff"))
            self.assertGreater(b["disk_snap_ms"], 0)
            # The old pause held the snapshot (68-92 ms here); now it holds only the start of
            # copy-before-write (the target is 5 ms; 30 allows for a loaded test machine).
            self.assertLess(b["pause_ms"], 30, b)
        fleeced = [b for b in runs if b["fleece_blocks"]]
        print("\n  pause ms %s; snapshot after it ms %s; fleeced blocks %s; guest write wait max us %s" % (
            [round(b["pause_ms"], 2) for b in runs], [round(b["disk_snap_ms"], 1) for b in runs],
            [b["fleece_blocks"] for b in runs], [b["guest_write_wait_max_us"] for b in runs]))
        self.assertTrue(fleeced, "no guest write fell between a pause and its snapshot in %d backups" % len(runs))
        b = fleeced[-1]
        # The backup with fleeced blocks restores to its pause exactly: the guest's generation
        # table (memory, at the pause) and every block of the disk agree. The guest reads its
        # blocks in a cycle; it runs until it has read all of them back at least once.
        r = gwtest.run([VM, "restore-backup", "--vm", "bk2", "--backup", b["id"], "--name", "bk2r", "--disk",
                        self.spec("bk2r"), "--seconds", "8", "--json"] + store, timeout=300)
        j = self.assert_clone_verifies(r, b)
        self.assertGreaterEqual(j["disk_blocks_read"], small // BLOCK, "not a whole verify pass")
        # The snapshot kept is the last backup's, whatever came from the fleecing area.
        self.assertEqual(self.snaps("bk2"), ["godwit-" + runs[-1]["id"]])
        code, j, err = self.stop(src)
        self.assert_healthy(code, j, err)


    def test_instant_restore_into_rbd(self):
        """restore-backup --instant into a new RBD image: the guest runs at once, its blocks not
        yet filled come from the backup (the device fetches them), its writes go to the image
        through the VM's own handle, and the filled image is an ordinary RBD disk."""
        size = 16 << 20
        disk = self.new_image("in1", size)
        store = ["--store", "rados:godwit/in%d" % (int(time.time() * 1e6) % 10**9), "--ceph-conf", self.conf]
        src = self.start("in1", disk)
        time.sleep(1.0)
        b = self.backup(src, store)
        self.assertEqual(b["disk_bytes"], size)
        code, j, err = self.stop(src)
        self.assert_healthy(code, j, err)
        # Paced (16 MiB at 4 MiB/s) so that the guest reaches chunks the fill has not.
        r = gwtest.run([VM, "restore-backup", "--vm", "in1", "--name", "in1r", "--disk", self.spec("in1r"),
                        "--instant", "--fill-rate", "4M", "--seconds", "8", "--json"] + store, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        j = gwtest.last_json(r.stdout)
        self.assert_healthy(r.returncode, j, r.stderr)
        self.assertEqual(j["instant_phase"], "complete", j)
        self.assertTrue(j["instant_digest_ok"], j)
        self.assertEqual(j["instant_memory_digest"], b["memory_digest"])
        self.assertEqual(j["guest_verify_errors"], 0)
        self.assertGreater(j["instant_disk_chunks_total"], 0)
        self.assertEqual(j["instant_disk_chunks_done"], j["instant_disk_chunks_total"])
        self.assertGreater(j["instant_disk_chunks_demand"] + j["instant_disk_chunks_overwritten"], 0, j)
        self.assertGreater(j["disk_blocks_read"], 500)
        self.assertGreater(j["disk_blocks_written"], 0)
        print("\n  instant into RBD: disk chunks %d (%d on demand, %d overwritten), fill %.0f ms" % (
            j["instant_disk_chunks_total"], j["instant_disk_chunks_demand"], j["instant_disk_chunks_overwritten"],
            j["instant_fill_ms"]))
        # The filled image stays, holds every block (the backup's or the guest's newer one) and
        # runs an ordinary VM.
        self.assert_blocks_verify(self.export("in1r"), size)
        r = gwtest.run([VM, "run", "--memory", "64M", "--guest", "disk", "--disk", self.spec("in1r"), "--seconds", "2",
                        "--json"])
        self.assert_healthy(r.returncode, gwtest.last_json(r.stdout), r.stderr)

    def test_instant_restore_into_rbd_exact_or_removed(self):
        """A guest that never touches its disk: the fill alone brings the image back, byte for
        byte; a VM that ends before its fill does leaves no half-filled image behind."""
        size = 8 << 20
        raw = os.path.join(self.dir, "in2.raw")
        data = os.urandom(size // 2) + bytes(size // 4) + os.urandom(size // 4)   # a zero stretch: holes
        with open(raw, "wb") as f:
            f.write(data)
        self.rbd("import", raw, "godwit/in2")
        store = ["--store", "rados:godwit/in%d" % (int(time.time() * 1e6) % 10**9), "--ceph-conf", self.conf]
        src = gwtest.Runner(VM, ["run", "--name", "in2", "--memory", "64M", "--guest", "dirtier:ws=8M,rate=2M",
                                 "--disk", self.spec("in2"), "--seconds", "120"], self.dir)
        self.procs.append(src.proc)
        time.sleep(1.0)
        b = self.backup(src, store)
        self.assertEqual(b["disk_bytes"], size)
        self.stop(src)
        # 6 MiB of chunks at 512 KiB/s: far from done when the VM stops after a second.
        r = gwtest.run([VM, "restore-backup", "--vm", "in2", "--name", "in2s", "--disk", self.spec("in2s"),
                        "--instant", "--fill-rate", "512K", "--seconds", "1", "--json"] + store, timeout=300)
        j = gwtest.last_json(r.stdout)
        self.assertEqual(j["status"], "ok", r.stderr)
        self.assertLess(j["instant_disk_chunks_done"], j["instant_disk_chunks_total"], j)
        self.assertNotEqual(self.rbd("info", "godwit/in2s", check=False).returncode, 0, "the half-filled image stayed")
        r = gwtest.run([VM, "restore-backup", "--vm", "in2", "--name", "in2r", "--disk", self.spec("in2r"),
                        "--instant", "--seconds", "3", "--json"] + store, timeout=300)
        j = gwtest.last_json(r.stdout)
        self.assertEqual((r.returncode, j["status"], j["instant_phase"]), (0, "ok", "complete"), r.stderr)
        self.assertEqual(j["instant_memory_digest"], b["memory_digest"])
        self.assertEqual(j["guest_verify_errors"], 0)
        self.assertEqual(j["instant_disk_chunks_demand"] + j["instant_disk_chunks_overwritten"], 0, j)
        self.assertTrue(self.export("in2r") == data, "the filled image differs from the backed-up disk")


class RbdDaemon(RbdBase):
    """godwitd with rbd_pools: an RBD-backed VM created, started and migrated through the API."""

    def setUp(self):
        super().setUp()
        try:
            import grpc  # noqa: F401
            from grpc_tools import protoc  # noqa: F401
        except ImportError:
            self.skipTest("python3-grpcio / grpc-tools missing")
        sys.path.insert(0, os.path.join(HERE, "..", "daemon"))
        import gwd
        self.gwd = gwd
        self.api = gwd.stubs()[0]
        bindir = os.path.dirname(VM)
        a_port, b_port = gwd.free_port(), gwd.free_port()
        rbd = "rbd_pools = godwit\nrbd_conf = %s\n" % self.conf
        self.a = gwd.Daemon(bindir, "host-a", port=a_port, extra="peers = 127.0.0.1:%d\n%s" % (b_port, rbd))
        self.b = gwd.Daemon(bindir, "host-b", port=b_port, extra="migration_port = %d\npeers = 127.0.0.1:%d\n%s"
                            % (gwd.free_port(), a_port, rbd))

    def tearDown(self):
        for d in (getattr(self, "a", None), getattr(self, "b", None)):
            if d:
                d.cleanup()
        super().tearDown()

    def call(self, d, method, req, timeout=60):
        return getattr(d.stub, method)(req, metadata=self.gwd.AUTH, timeout=timeout)

    def test_create_start_migrate_through_the_api(self):
        import grpc
        api = self.api
        self.new_image("dvm")
        # The API names the pool and image only: no file of this host's, no other pool.
        for disk, why in (("rbd:godwit/dvm:conf=/etc/passwd", "names no options"),
                          ("rbd:otherpool/dvm", "not in this host's rbd_pools")):
            with self.assertRaises(grpc.RpcError) as cm:
                self.call(self.a, "CreateVm", api.CreateVmRequest(name="bad", memory_bytes=64 << 20, vcpus=1,
                                                                  guest="disk", disk_path=disk, start=True))
            self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION, disk)
            self.assertIn(why, cm.exception.details())
        self.call(self.a, "CreateVm", api.CreateVmRequest(name="dvm", memory_bytes=64 << 20, vcpus=1, guest="disk",
                                                          disk_path="rbd:godwit/dvm", start=True))
        self.assertTrue(self.gwd.wait_for(lambda: self.call(self.a, "GetVm", api.GetVmRequest(name="dvm")).vm.state
                                          == api.Vm.RUNNING, 30))
        time.sleep(1.0)
        job = self.call(self.a, "MigrateVm", api.MigrateVmRequest(vm="dvm", destination=self.b.addr)).job
        events = list(self.a.stub.WatchJob(api.WatchJobRequest(id=job.id), metadata=self.gwd.AUTH, timeout=120))
        final = events[-1].job
        self.assertEqual(final.state, api.Job.SUCCEEDED, final.error)
        self.assertTrue(self.gwd.wait_for(lambda: self.call(self.b, "GetVm", api.GetVmRequest(name="dvm")).vm.state
                                          == api.Vm.RUNNING, 10))
        # host-b's runner got host-b's Ceph settings appended, never anything from the wire.
        argvs = []
        for pid in self.b.runner_pids():
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argvs.append(f.read().decode(errors="replace").split("\0"))
        disks = [a[a.index("--disk") + 1] for a in argvs if "--disk" in a]
        self.assertEqual(disks, ["rbd:godwit/dvm:conf=%s" % self.conf])
        time.sleep(1.0)
        self.call(self.b, "StopVm", api.StopVmRequest(name="dvm"))
        outs = [os.path.join(r, f) for r, _, fs in os.walk(self.b.dir) for f in fs if f == "runner.out"]
        self.assertEqual(len(outs), 1, outs)
        with open(outs[0]) as f:
            j = gwtest.last_json(f.read())
        self.assertEqual((j["disk_verify_errors"], j["disk_io_errors"]), (0, 0), j)
        self.assertGreater(j["disk_blocks_read"], 0)
        self.assert_blocks_verify(self.export("dvm"))


if __name__ == "__main__":
    gwtest.require_kvm()
    require_ceph()
    unittest.main()
