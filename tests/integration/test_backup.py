#!/usr/bin/env python3
"""Integration tests for backups (backup/, storage/) with real KVM guests, a local directory
store and a real throw-away Ceph cluster (scripts/ceph-cluster) started by the suite:
a running dirtier backed up and restored as a clone that continues with an equal digest and
0 verify errors (both backends); a disk guest restored to its point in time; incremental
backups write only changed chunks; an OSD killed mid-backup fails the backup within its
timeout with a clear error while the guest runs on, earlier backups still restore and a retry
after the OSD returns succeeds; a full pool is an immediate clear error; a corrupted chunk is
found by verify (with the backups using it) and refused by restore; hostile manifests are
refused with a reason; a runner killed mid-backup leaves nothing listed; an interrupted CLI
stops its backup; the runner answers status during a backup, refuses other operations, and a
stop stops the backup first.
Usage: test_backup.py [path/to/godwit-vm]."""
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

VM = gwtest.binary("godwit-vm")
HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER = os.path.join(HERE, "..", "..", "scripts", "ceph-cluster")
EXIT_VERIFY = 3


def start_cluster(store="memstore"):
    r = subprocess.run([CLUSTER, "start", "--store", store], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError("ceph-cluster start failed:\n" + r.stdout + r.stderr)
    return r.stdout.strip().splitlines()[-1]


def cluster(verb, conf, *extra):
    r = subprocess.run([CLUSTER, verb, conf] + list(extra), capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError("ceph-cluster %s failed:\n%s%s" % (verb, r.stdout, r.stderr))


def test_hooks():
    """True when godwit-vm was built with GODWIT_TEST_HOOKS (it then takes --test-fault)."""
    return "'--test-fault' requires an argument" in gwtest.run([VM, "run", "--test-fault"], timeout=10).stderr


def status(sock):
    return gwtest.last_json(gwtest.run([VM, "status", "--control", sock, "--json"]).stdout)


class BackupBase(unittest.TestCase):
    conf = None

    @classmethod
    def setUpClass(cls):
        gwtest.require_kvm()
        cls.conf = start_cluster("memstore")

    @classmethod
    def tearDownClass(cls):
        if cls.conf:
            cluster("stop", cls.conf)

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="godwit-backup-")
        self.runners = []

    def tearDown(self):
        for r in self.runners:
            r.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def store_args(self, backend, ns=None):
        if backend == "dir":
            return ["--store", "dir:" + os.path.join(self.dir, "store")]
        ns = ns or "t%d" % (int(time.time() * 1e6) % 10**9)
        return ["--store", "rados:godwit/" + ns, "--ceph-conf", self.conf]

    def start(self, name, args):
        r = gwtest.Runner(VM, ["run", "--name", name, "--seconds", "120"] + args, self.dir)
        self.runners.append(r)
        deadline = time.time() + 30
        while time.time() < deadline:
            if status(r.sock).get("guest_ready"):
                return r
            time.sleep(0.1)
        raise AssertionError("guest never became ready")

    def backup(self, runner, store, *extra, ok=True):
        r = gwtest.run([VM, "backup", "--control", runner.sock, "--json"] + store + list(extra), timeout=300)
        j = gwtest.last_json(r.stdout)
        if ok:
            self.assertTrue(j["ok"], j)
            self.assertEqual(r.returncode, 0, r.stderr)
        return j

    def stop(self, runner):
        gwtest.run([VM, "stop", "--control", runner.sock])
        code, out, err = runner.finish()
        return code, gwtest.last_json(out), err

    def restore(self, store, vm, *extra, seconds=3):
        r = gwtest.run([VM, "restore-backup", "--vm", vm, "--seconds", str(seconds), "--json"] + store + list(extra),
                       timeout=300)
        return r

    def image(self, name, size):
        """A sparse raw disk image in the test's directory."""
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.truncate(size)
        return path

    def assert_disk_restores(self, store, vm, name, backup, *extra):
        """Restores backup (a backup's JSON) as clone `name` into a new image; its disk guest
        must read back every block it knows with 0 verify errors."""
        r = self.restore(store, vm, "--name", name, "--disk", os.path.join(self.dir, name + ".img"),
                         "--backup", backup["id"], *extra)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        j = gwtest.last_json(r.stdout)
        self.assertEqual(j["disk_verify_errors"], 0, r.stderr)
        self.assertEqual(j["disk_io_errors"], 0)
        self.assertGreater(j["disk_blocks_read"], 100)
        self.assertEqual(j["memory_digest"], backup["memory_digest"])
        return j

    def assert_clone_runs(self, r, digest):
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        j = gwtest.last_json(r.stdout)
        self.assertEqual(j["status"], "ok", j)
        self.assertEqual(j["memory_digest"], digest)
        self.assertEqual(j["guest_verify_errors"], 0)
        self.assertGreater(j["guest_pages_verified"], 0)
        self.assertGreater(j["guest_pages_written"], 0)   # it continued, not just loaded
        return j


class Backups(BackupBase):
    def roundtrip(self, backend):
        store = self.store_args(backend)
        src = self.start("web1", ["--memory", "256M", "--guest", "dirtier:ws=96M,rate=32M,pattern=random"])
        b = self.backup(src, store)
        self.assertGreater(b["new_chunks"], 50)
        self.assertEqual(b["method"], "wp")
        self.assertLess(b["pause_ms"], 200)
        self.assertEqual(b["throttle"], "adaptive")
        self.assertEqual(b["throttle_vm_target_pct"], 110, b)   # the default target
        # The dirtier wrote on through the backup: its writes faulted, and pages it was about
        # to overwrite before the backup read them were copied aside (a random writer's fault
        # copies its page, one moving through memory its block).
        self.assertGreater(b["wp_faults"], 0, b)
        self.assertGreater(b["wp_pages_copied"], 0, b)
        # The side buffer's default bound is a quarter of the guest's RAM; the copies held at
        # once stayed under it and are counted (at least one page, at most what was copied).
        self.assertEqual(b["wp_side_limit"], 64 << 20, b)
        self.assertGreaterEqual(b["wp_side_peak_bytes"], 4096, b)
        self.assertLessEqual(b["wp_side_peak_bytes"], min(b["wp_side_limit"], b["wp_pages_copied"] * 4096), b)
        listed = gwtest.last_json(gwtest.run([VM, "list-backups", "--vm", "web1", "--json"] + store).stdout)
        self.assertEqual([x["id"] for x in listed["backups"]], [b["id"]])
        v = gwtest.run([VM, "verify-backup", "--vm", "web1", "--json"] + store)
        vj = gwtest.last_json(v.stdout)
        self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
        self.assertEqual((vj["bad_chunks"], vj["bad_manifests"], vj["backups"]), (0, 0, 1))
        self.assertEqual(vj["unique_chunks"], b["chunks"] - b["zero_chunks"])
        r = self.restore(store, "web1", "--name", "clone1")
        self.assert_clone_runs(r, b["memory_digest"])
        # The source ran on through all of it.
        code, j, err = self.stop(src)
        self.assertEqual(code, 0, err)
        self.assertEqual(j["guest_verify_errors"], 0)

    def test_dirtier_roundtrip_dir(self):
        self.roundtrip("dir")

    def test_dirtier_roundtrip_rados(self):
        self.roundtrip("rados")

    def test_dirty_log_method_roundtrip(self):
        store = self.store_args("dir")
        src = self.start("dl1", ["--memory", "256M", "--guest", "dirtier:ws=64M,rate=16M,pattern=text"])
        b = self.backup(src, store, "--method", "dirty-log")
        r = self.restore(store, "dl1", "--name", "dl1b")
        self.assert_clone_runs(r, b["memory_digest"])
        listed = gwtest.last_json(gwtest.run([VM, "list-backups", "--vm", "dl1", "--json"] + store).stdout)
        self.assertEqual(listed["backups"][0]["method"], "dirty-log")

    def test_pause_method_and_encryption(self):
        key = os.path.join(self.dir, "key")
        with open(key, "w") as f:
            f.write("11" * 32 + "\n")
        store = self.store_args("rados") + ["--key-file", key]
        src = self.start("enc1", ["--memory", "128M", "--guest", "dirtier:ws=32M,rate=16M"])
        b = self.backup(src, store, "--method", "pause")
        r = self.restore(store, "enc1", "--name", "enc1b")
        self.assert_clone_runs(r, b["memory_digest"])
        # Without the key the same backup is refused, with its reason.
        r = self.restore(store[:-2], "enc1", "--name", "enc1c")
        self.assertEqual(r.returncode, 1)
        self.assertIn("encrypted", r.stderr)

    def test_incremental_writes_only_changed_chunks(self):
        store = self.store_args("rados")
        src = self.start("idle1", ["--memory", "256M", "--guest", "idle:ws=128M"])
        first = self.backup(src, store)
        self.assertGreaterEqual(first["new_chunks"], 128)
        second = self.backup(src, store)
        # The idle guest changes a few pages (stack, counters): only their chunks are new.
        self.assertLessEqual(second["new_chunks"], 4, second)
        self.assertLess(second["new_bytes"], 5 << 20, second)
        self.assertGreaterEqual(second["reused_chunks"], 124)
        listed = gwtest.last_json(gwtest.run([VM, "list-backups", "--vm", "idle1", "--json"] + store).stdout)
        self.assertEqual(listed["backups"][1]["parent"], first["id"])
        r = self.restore(store, "idle1", "--name", "idle1b")
        self.assert_clone_runs(r, second["memory_digest"])

    def test_incremental_by_bitmap_reads_only_changed_chunks(self):
        # The runner keeps what changed since its last backup: an unchanged chunk is neither
        # read nor hashed, and the backup still restores to its exact point in time.
        store = self.store_args("dir")
        src = self.start("bm1", ["--memory", "256M", "--guest", "idle:ws=128M"])
        first = self.backup(src, store)
        self.assertEqual(first["chunks_unread"], 0)               # no base yet: everything read
        self.assertGreaterEqual(first["bytes_read"], 128 << 20)
        second = self.backup(src, store)
        data = second["chunks"] - second["zero_chunks"]
        self.assertGreaterEqual(second["chunks_unread"], data - 4, second)   # only the idle loop's pages
        self.assertLessEqual(second["bytes_read"], 4 << 20, second)
        gwtest.run([VM, "pause", "--control", src.sock])
        self.backup(src, store)                                   # what changed before the pause
        third = self.backup(src, store)                           # an unchanged guest
        self.assertEqual((third["bytes_read"], third["new_chunks"]), (0, 0), third)
        self.assertEqual(third["chunks_unread"], data)
        gwtest.run([VM, "resume", "--control", src.sock])
        r = self.restore(store, "bm1", "--name", "bm1b")
        self.assert_clone_runs(r, third["memory_digest"])
        code, j, err = self.stop(src)
        self.assertEqual((code, j["guest_verify_errors"]), (0, 0), err)

    def test_incremental_by_bitmap_with_a_writer(self):
        # A guest writing slowly: each backup reads the chunks it touched, and restores
        # with the digest of its point in time (a wrong bitmap or digest would fail the restore).
        store = self.store_args("dir")
        src = self.start("bm2", ["--memory", "256M", "--guest", "dirtier:ws=96M,rate=64K"])
        self.backup(src, store)
        time.sleep(0.5)
        b = self.backup(src, store)
        self.assertGreater(b["chunks_unread"], 40, b)             # ~16 pages a second: few chunks touched
        self.assertGreater(b["bytes_read"], 0, b)
        time.sleep(0.5)
        c = self.backup(src, store, "--method", "pause")          # not incremental: reads all, rebases
        self.assertEqual(c["chunks_unread"], 0)
        d = self.backup(src, store)
        self.assertGreater(d["chunks_unread"], 0, d)
        v = gwtest.run([VM, "verify-backup", "--vm", "bm2", "--json"] + store)
        self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
        r = self.restore(store, "bm2", "--name", "bm2b", "--backup", b["id"])
        self.assert_clone_runs(r, b["memory_digest"])
        r = self.restore(store, "bm2", "--name", "bm2c")
        self.assert_clone_runs(r, d["memory_digest"])
        code, j, err = self.stop(src)
        self.assertEqual((code, j["guest_verify_errors"]), (0, 0), err)

    def backup_after(self, runner, store, vm, clone):
        """A backup through runner that restores to its point in time (a bitmap or digest state
        carried wrongly would fail the restore's digest check)."""
        b = self.backup(runner, store)
        r = self.restore(store, vm, "--name", clone)
        self.assert_clone_runs(r, b["memory_digest"])
        return b

    def test_bitmap_survives_suspend_and_restore(self):
        store = self.store_args("dir")
        src = self.start("bm3", ["--memory", "256M", "--guest", "idle:ws=128M"])
        self.assertEqual(self.backup(src, store)["chunks_unread"], 0)
        snap = os.path.join(self.dir, "bm3.snap")
        s = gwtest.run([VM, "save", "--control", src.sock, "--file", snap, "--stop"], timeout=120)
        self.assertEqual(s.returncode, 0, s.stderr)
        src.finish()
        back = gwtest.Runner(VM, ["restore", "--file", snap, "--seconds", "120"], self.dir)
        self.runners.append(back)
        b = self.backup_after(back, store, "bm3", "bm3b")
        # Carried in the suspend file: most chunks unread (without it, every chunk is read).
        self.assertGreater(b["chunks_unread"], (b["chunks"] - b["zero_chunks"]) // 2, b)
        self.assertLessEqual(b["bytes_read"], 64 << 20, b)
        code, j, err = self.stop(back)
        self.assertEqual((code, j["guest_verify_errors"]), (0, 0), err)

    def test_bitmap_survives_migration(self):
        store = self.store_args("dir")
        secret = os.path.join(self.dir, "secret")
        with open(secret, "w") as f:
            f.write("test-cluster-secret-0123456789abcdefghij\n")
        dst_sock = os.path.join(self.dir, "dst.sock")
        dst = subprocess.Popen([VM, "incoming", "--listen", "tcp:127.0.0.1:0", "--secret-file", secret, "--control",
                                dst_sock, "--seconds", "120", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        try:
            url = __import__("json").loads(dst.stdout.readline())["listening"]
            src = self.start("bm4", ["--memory", "256M", "--guest", "idle:ws=128M", "--secret-file", secret])
            self.assertEqual(self.backup(src, store)["chunks_unread"], 0)
            m = gwtest.run([VM, "migrate", "--control", src.sock, "--to", url, "--wait", "--json"], timeout=120)
            self.assertEqual(m.returncode, 0, m.stdout + m.stderr)
            src.finish()
            self.assertTrue(gwtest.wait_for_path(dst_sock))

            class There:
                sock = dst_sock
            self.backup_after(There, store, "bm4", "bm4b")
            gwtest.run([VM, "stop", "--control", dst_sock])
            out, err = dst.communicate(timeout=60)
            self.assertEqual((dst.returncode, gwtest.last_json(out)["guest_verify_errors"]), (0, 0), err)
            # The destination took the bitmap and the digest state over from the source. (How
            # many chunks it then skips varies here: see docs/backups.md.)
            self.assertRegex(err, r"carried over \(\d+ pages changed, with its digest\)")
        finally:
            if dst.poll() is None:
                dst.kill()
                dst.communicate()

    def test_disk_guest_restored_to_its_point_in_time(self):
        img = self.image("disk.img", 16 << 20)
        store = self.store_args("dir")
        src = self.start("disk1", ["--memory", "64M", "--guest", "disk", "--disk", img])
        # The runner keeps its disk's recent past: the p99 of each 0.5 s window, the last 64.
        deadline = time.time() + 30
        while True:
            st = status(src.sock)
            if len(st.get("disk_p99_windows_us", [])) >= 16 or time.time() > deadline:
                break
            time.sleep(0.5)
        self.assertEqual(st["disk_window_ms"], 500, st)
        wins = st["disk_p99_windows_us"]
        self.assertGreaterEqual(len(wins), 16, st)
        self.assertLessEqual(len(wins), 64, st)
        self.assertTrue(all(0 < w < 10000000 for w in wins), wins)
        # And when each ended: ages, oldest first, one window (0.5 s, at most 1 s) apart.
        ages = st["disk_window_ages_ms"]
        self.assertEqual(len(ages), len(wins), st)
        self.assertLess(ages[-1], 5000, st)
        self.assertTrue(all(400 <= a - b <= 1100 for a, b in zip(ages, ages[1:])), ages)
        b = self.backup(src, store)
        self.assertEqual(b["disk_bytes"], 16 << 20)
        # The adaptive throttle took the guest's baseline from that past at once, not from 2 s
        # of waiting: the median of 16 or more windows, within their range.
        self.assertEqual(b["throttle"], "adaptive")
        self.assertTrue(b["throttle_vm_base_from_history"], b)
        self.assertGreaterEqual(b["throttle_vm_base_windows"], 16, b)
        self.assertGreater(b["throttle_vm_base_us"], 0, b)
        self.assertLessEqual(b["throttle_vm_base_us"], 10000000, b)
        # A second backup 3 s later leaves out the windows of the first and of the 10 s after
        # it (the store settling): at most the windows before the first began are its past
        # (those of the status above, and one or two cut since), not the 6 or more since.
        time.sleep(3)
        b2 = self.backup(src, store)
        self.assertLessEqual(b2["throttle_vm_base_windows"], len(wins) + 2, (b2, len(wins)))
        # The source keeps writing its disk; the clone gets the image as it was at the backup.
        time.sleep(0.5)
        self.assert_disk_restores(store, "disk1", "disk1b", b)
        # A backup with a disk needs a new image to restore into.
        r = self.restore(store, "disk1", "--name", "disk1c")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--disk", r.stderr)
        code, j, err = self.stop(src)
        self.assertEqual(j["disk_verify_errors"], 0)

    def test_large_disk_small_pause_guest_writes_fleeced(self):
        # 4 GiB of disk (sparse: the guest's region is its first 64 MiB): the pause arms
        # copy-before-write and reads nothing; the guest writes on while the backup reads.
        img = self.image("big.img", 4 << 30)
        store = self.store_args("dir")
        src = self.start("disk2", ["--memory", "256M", "--guest", "disk", "--disk", img])
        time.sleep(0.5)
        b = self.backup(src, store)
        self.assertEqual(b["disk_bytes"], 4 << 30)
        self.assertLess(b["pause_ms"], 100, b)   # reading 4 GiB would take seconds
        self.assert_disk_restores(store, "disk2", "disk2b", b)
        # Blocks the guest overwrote before the backup read them came from the fleece.
        self.assertGreater(b["fleece_blocks"], 0, b)
        self.assertEqual(b["fleece_bytes"], b["fleece_blocks"] * (64 << 10))
        self.assertLess(b["guest_write_wait_max_us"], 100000, b)
        code, j, err = self.stop(src)
        self.assertEqual(j["disk_verify_errors"], 0)

    def test_incremental_disk_reads_only_written_blocks_and_keeps_its_bitmap(self):
        img = self.image("inc.img", 1 << 30)
        store = self.store_args("dir")
        # 20 batches a second: few blocks change between two backups (each batch writes two
        # random 4 KiB blocks of the 64 MiB region).
        src = self.start("disk4", ["--memory", "128M", "--guest", "disk:hz=20", "--disk", img])
        time.sleep(0.3)
        gwtest.run([VM, "pause", "--control", src.sock])
        a = self.backup(src, store)
        self.assertGreaterEqual(a["disk_read_bytes"], 16 << 20, a)   # the guest's region, not the holes
        self.assertLess(a["disk_read_bytes"], 128 << 20, a)
        # Nothing written since: the disk is not read at all, every disk chunk is the parent's.
        b = self.backup(src, store)
        self.assertEqual(b["disk_read_bytes"], 0, b)
        # The guest writes only while it is let run for a fixed 0.3 s: a backup that takes long
        # on a loaded machine must not let it write half the region before the next one.
        gwtest.run([VM, "resume", "--control", src.sock])
        time.sleep(0.3)
        gwtest.run([VM, "pause", "--control", src.sock])
        # Written since: those blocks are read again, and the result is the point in time.
        c = self.backup(src, store)
        self.assertGreater(c["disk_read_bytes"], 0, c)
        self.assertLessEqual(c["disk_read_bytes"], 32 << 20, c)
        # The bitmap travels in the saved state: suspended and restored, the disk is read only
        # where the guest wrote in the moment it ran before the pause (a lost bitmap: 64 MiB).
        gwtest.run([VM, "resume", "--control", src.sock])
        time.sleep(0.2)
        gwtest.run([VM, "pause", "--control", src.sock])
        snap = os.path.join(self.dir, "disk4.snap")
        s = gwtest.run([VM, "save", "--control", src.sock, "--file", snap, "--stop"], timeout=120)
        self.assertEqual(s.returncode, 0, s.stderr)
        src.finish()
        self.runners.remove(src)
        again = gwtest.Runner(VM, ["restore", "--file", snap, "--disk", img, "--seconds", "60"], self.dir)
        self.runners.append(again)
        gwtest.run([VM, "pause", "--control", again.sock])
        d = self.backup(again, store)
        self.assertLessEqual(d["disk_read_bytes"], 32 << 20, d)
        gwtest.run([VM, "resume", "--control", again.sock])
        self.assert_disk_restores(store, "disk4", "disk4b", c)
        self.assert_disk_restores(store, "disk4", "disk4c", d)

    def test_fleece_full_fails_the_backup_not_the_guest(self):
        img = self.image("disk.img", 64 << 20)
        store = self.store_args("dir")
        src = self.start("disk3", ["--memory", "256M", "--guest", "disk", "--disk", img])
        time.sleep(0.3)
        # Room for one 64 KiB block: the guest's second overwrite of an unread block fills it.
        j = self.backup(src, store, "--fleece-limit", "64K", ok=False)
        self.assertFalse(j["ok"], j)
        self.assertIn("fleecing area full", j["error"])
        listed = gwtest.last_json(gwtest.run([VM, "list-backups", "--vm", "disk3", "--json"] + store).stdout)
        self.assertEqual(listed["backups"], [])
        time.sleep(0.3)
        st = status(src.sock)
        self.assertEqual(st["state"], "running")
        self.assertEqual(st["guest_verify_errors"], 0)
        # The same guest with the default fleecing area backs up fine.
        b = self.backup(src, store)
        self.assertTrue(b["ok"])
        code, j, err = self.stop(src)
        self.assertEqual(code, 0, err)
        self.assertEqual(j["disk_verify_errors"], 0)
        self.assertGreater(j["disk_blocks_written"], 0)

    def test_side_buffer_full_fails_the_backup_not_the_guest(self):
        store = self.store_args("dir")
        src = self.start("web3", ["--memory", "256M", "--guest", "dirtier:ws=96M,rate=32M,pattern=random"])
        # Out of bounds: refused before anything starts.
        r = gwtest.run([VM, "backup", "--control", src.sock, "--side-limit", "4K", "--json"] + store)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("--side-limit is 1 M", r.stderr)
        # 1 MiB of copies (256 pages) against a dirtier rewriting 96 MiB at 32 MiB/s, read at
        # no more than 4 MiB/s: it fills, and the backup fails with the reason.
        j = self.backup(src, store, "--side-limit", "1M", "--throttle", "fixed", "--rate", "4M", ok=False)
        self.assertFalse(j["ok"], j)
        self.assertIn("changed more than 1 MiB before the backup could read it", j["error"])
        listed = gwtest.last_json(gwtest.run([VM, "list-backups", "--vm", "web3", "--json"] + store).stdout)
        self.assertEqual(listed["backups"], [])
        st = status(src.sock)
        self.assertEqual(st["state"], "running")
        self.assertEqual(st["guest_verify_errors"], 0)
        # A bound above the guest's RAM is that RAM (a page is copied at most once).
        b = self.backup(src, store, "--side-limit", "1G")
        self.assertTrue(b["ok"], b)
        self.assertEqual(b["wp_side_limit"], 256 << 20, b)
        code, j, err = self.stop(src)
        self.assertEqual(code, 0, err)
        self.assertEqual(j["guest_verify_errors"], 0)

    def test_fixed_throttle_holds_its_rate(self):
        store = self.store_args("dir")
        # Random pages do not compress: the store gets about 64 MiB, ~2.5 s at 24 MiB/s.
        src = self.start("thr1", ["--memory", "256M", "--guest", "dirtier:ws=64M,rate=8M,pattern=random"])
        b = self.backup(src, store, "--throttle", "fixed", "--rate", "24M")
        self.assertEqual(b["throttle"], "fixed")
        self.assertGreater(b["throttle_bytes"], 56 << 20, b)
        # The first 4 MiB are the bucket's burst; the rest goes at the rate.
        mib_s = (b["throttle_bytes"] - (4 << 20)) / (1 << 20) / (b["throttle_elapsed_ms"] / 1000.0)
        sys.stderr.write("  fixed 24 MiB/s: %.1f MiB/s over %.0f ms\n" % (mib_s, b["throttle_elapsed_ms"]))
        self.assertGreater(mib_s, 24 * 0.85, b)
        self.assertLess(mib_s, 24 * 1.1, b)
        self.assertEqual(b["throttle_backoffs"], 0)
        self.assertEqual(b["throttle_vm_target_pct"], 0, b)
        r = self.restore(store, "thr1", "--name", "thr1b")
        self.assert_clone_runs(r, b["memory_digest"])
        # A fixed throttle without a limit is refused with its reason.
        j = self.backup(src, store, "--throttle", "fixed", ok=False)
        self.assertFalse(j["ok"])
        self.assertIn("needs a rate", j["error"])

    def test_adaptive_throttle_backs_off_under_store_latency(self):
        if not test_hooks():
            self.skipTest("godwit-vm built without GODWIT_TEST_HOOKS: no store latency injection")
        store = self.store_args("dir")
        src = self.start("thr2", ["--memory", "384M", "--guest", "dirtier:ws=256M,rate=8M,pattern=random"])
        # Every store write takes 40 ms more for the first 1.5 s (Veeam throttles at 30 ms).
        # The VMs' latency target from the command line (default 110 %); out of range: usage.
        r = gwtest.run([VM, "backup", "--control", src.sock, "--json", "--vm-latency-target", "100"] + store)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--vm-latency-target is 101..1000", r.stderr)
        b = self.backup(src, store, "--test-store-delay", "40000:1500", "--vm-latency-target", "150")
        self.assertEqual(b["throttle_vm_target_pct"], 150, b)
        sys.stderr.write("  adaptive: %d back-offs, lowest %.1f MiB/s, end %.1f MiB/s (0: unlimited), %.0f ms\n"
                         % (b["throttle_backoffs"], b["throttle_min_mib_s"], b["throttle_end_mib_s"], b["throttle_elapsed_ms"]))
        self.assertEqual(b["throttle"], "adaptive")
        self.assertGreaterEqual(b["throttle_backoffs"], 3, b)
        self.assertLessEqual(b["throttle_min_mib_s"], 4, b)
        self.assertIn("store write", b["throttle_why"])
        # Recovered once the latency went: by the end the limit is lifted (0) or far above the
        # 1 MiB/s it fell to (it grows by a quarter per 100 ms until it lifts).
        self.assertTrue(b["throttle_end_mib_s"] == 0 or b["throttle_end_mib_s"] >= 64, b)
        r = self.restore(store, "thr2", "--name", "thr2b")
        self.assert_clone_runs(r, b["memory_digest"])
        # The same injection without adaptive control: no back-off, the writes just wait.
        b2 = self.backup(src, store, "--parent", "none", "--throttle", "off", "--test-store-delay", "40000:500")
        self.assertEqual(b2["throttle_backoffs"], 0, b2)
        self.assertEqual(b2["throttle_vm_target_pct"], 0, b2)

    def test_corrupted_chunk_found_by_verify_and_refused_by_restore(self):
        store = self.store_args("dir")
        # An idle guest: nearly every chunk is shared by both backups and none is rewritten.
        src = self.start("web2", ["--memory", "128M", "--guest", "idle:ws=32M"])
        b1 = self.backup(src, store)
        b2 = self.backup(src, store)
        chunks = sorted(glob.glob(os.path.join(self.dir, "store", "chunks", "*", "c.*")), key=os.path.getsize)
        # A chunk both backups use (the guest image and tables, unchanged between them).
        shared = None
        for c in chunks:
            with open(c, "rb") as f:
                data = f.read()
            if len(data) > 200:
                shared = c
        self.assertIsNotNone(shared)
        with open(shared, "r+b") as f:
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 0x40]))
        name = os.path.basename(shared)[2:]
        v = gwtest.run([VM, "verify-backup", "--vm", "web2", "--json"] + store)
        self.assertEqual(v.returncode, EXIT_VERIFY, v.stdout + v.stderr)
        vj = gwtest.last_json(v.stdout)
        self.assertEqual(vj["bad_chunks"], 1)
        bad = vj["bad"][0]
        self.assertEqual(bad["chunk"], name)
        self.assertEqual(sorted(bad["backups"]), sorted([b1["id"], b2["id"]]), bad)
        self.assertTrue(bad["reason"])
        r = self.restore(store, "web2", "--name", "web2b", "--backup", bad["backups"][-1])
        self.assertEqual(r.returncode, 1)
        self.assertIn(name, r.stderr)
        self.assertIn("restore refused", r.stderr)

    def test_hostile_manifests_refused(self):
        store = self.store_args("dir")
        src = self.start("web3", ["--memory", "64M", "--guest", "idle:ws=8M"])
        b = self.backup(src, store)
        path = os.path.join(self.dir, "store", "objects", "m.web3." + b["id"])
        with open(path, "rb") as f:
            good = f.read()
        cases = [(good[:len(good) // 2], "truncated"), (good[:-1] + bytes([good[-1] ^ 1]), "hash"),
                 (b"XXXXXXXX" + good[8:], "magic"), (b"", "truncated")]
        for data, reason in cases:
            with open(path, "wb") as f:
                f.write(data)
            r = self.restore(store, "web3", "--name", "web3b")
            self.assertEqual(r.returncode, 1, reason)
            self.assertIn(reason, r.stderr)
            v = gwtest.run([VM, "verify-backup", "--vm", "web3", "--json"] + store)
            self.assertEqual(v.returncode, EXIT_VERIFY)
            self.assertEqual(gwtest.last_json(v.stdout)["bad_manifests"], 1)
        # A name from the index that is not a safe name is never used as a path.
        r = gwtest.run([VM, "restore-backup", "--vm", "../web3", "--json"] + store)
        self.assertNotEqual(r.returncode, 0)

    def test_damaged_newest_manifest_gives_full_backup(self):
        """A damaged newest manifest does not stop the VM's backups: the default parent falls
        back to none (a full backup, restorable); a parent named on the command line fails."""
        store = self.store_args("dir")
        src = self.start("web5", ["--memory", "64M", "--guest", "idle:ws=8M"])
        b1 = self.backup(src, store)
        path = os.path.join(self.dir, "store", "objects", "m.web5." + b1["id"])
        with open(path, "r+b") as f:
            f.seek(60)
            byte = f.read(1)
            f.seek(60)
            f.write(bytes([byte[0] ^ 1]))
        named = self.backup(src, store, "--parent", b1["id"], ok=False)
        self.assertFalse(named["ok"])
        self.assertIn("hash", named["error"])
        b2 = self.backup(src, store)
        listed = gwtest.last_json(gwtest.run([VM, "list-backups", "--vm", "web5", "--json"] + store).stdout)
        mine = [b for b in listed["backups"] if b["id"] == b2["id"]]
        self.assertEqual(mine[0]["parent"], "", mine)
        r = self.restore(store, "web5", "--name", "web5b", "--backup", b2["id"])
        self.assert_clone_runs(r, b2["memory_digest"])

    def test_encrypted_manifest_sealed(self):
        """In an encrypted store the manifest is sealed (no VM state readable from the store),
        moving it under another backup's name is refused, and a plain manifest put in its place
        is refused as unsealed."""
        key = os.path.join(self.dir, "key6")
        with open(key, "w") as f:
            f.write("22" * 32 + "\n")
        store = self.store_args("dir") + ["--key-file", key]
        src = self.start("web6", ["--memory", "64M", "--guest", "idle:ws=8M"])
        b1 = self.backup(src, store)
        b2 = self.backup(src, store)
        objs = os.path.join(self.dir, "store", "objects")
        p1, p2 = os.path.join(objs, "m.web6." + b1["id"]), os.path.join(objs, "m.web6." + b2["id"])
        with open(p1, "rb") as f:
            sealed1 = f.read()
        self.assertEqual(sealed1[:8], b"GWMSEAL1")
        self.assertNotIn(b"web6", sealed1)
        with open(p2, "wb") as f:
            f.write(sealed1)
        r = self.restore(store, "web6", "--name", "web6b", "--backup", b2["id"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("authentication", r.stderr)
        r = self.restore(store, "web6", "--name", "web6c", "--backup", b1["id"])
        self.assert_clone_runs(r, b1["memory_digest"])

    def test_runner_killed_mid_backup_lists_nothing(self):
        store = self.store_args("dir")
        src = self.start("web4", ["--memory", "512M", "--guest", "dirtier:ws=384M,rate=16M"])
        p = subprocess.Popen([VM, "backup", "--control", src.sock, "--json"] + store,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        src.proc.send_signal(signal.SIGKILL)
        out, _ = p.communicate(timeout=60)
        self.assertNotEqual(p.returncode, 0)
        listed = gwtest.last_json(gwtest.run([VM, "list-backups", "--vm", "web4", "--json"] + store).stdout)
        self.assertEqual(listed["backups"], [])
        self.assertEqual(glob.glob(os.path.join(self.dir, "store", "objects", "m.*")), [])


class BusyRunner(BackupBase):
    """The runner's control socket during a backup (engine/runner/busy_responder.h), also run
    under ThreadSanitizer (integration_backup_busy): a directory store, no cluster."""

    @classmethod
    def setUpClass(cls):
        gwtest.require_kvm()

    def slow_backup(self, name, store):
        """A VM and a backup of it running through the CLI: 96 MiB at 1 MiB/s, a minute and a
        half, were it not stopped."""
        src = self.start(name, ["--memory", "256M", "--guest", "dirtier:ws=96M,rate=8M,pattern=random"])
        p = subprocess.Popen([VM, "backup", "--control", src.sock, "--throttle", "fixed", "--rate", "1M", "--json"]
                             + store, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        self.assertIsNone(p.poll(), "the backup ended too soon")
        return src, p

    def test_interrupted_cli_stops_its_backup(self):
        store = self.store_args("dir")
        src, p = self.slow_backup("web5", store)
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=10)
        # The backup sees within its throttle's next wait slice that nobody waits for it: a
        # new one is taken (refused while one runs) within seconds, not the minute and a half.
        t0, b = time.time(), None
        while time.time() - t0 < 10 and b is None:
            r = gwtest.run([VM, "backup", "--control", src.sock, "--json"] + store, timeout=300)
            self.assertIn("{", r.stdout, "no reply (exit %d): %s; runner %s" % (r.returncode, r.stderr, src.proc.poll()))
            j = gwtest.last_json(r.stdout)
            if j["ok"]:
                b = j
            else:
                self.assertIn("a backup is in progress", j["error"])
                time.sleep(0.2)
        self.assertIsNotNone(b, "the runner went on with a backup nobody waits for")
        st = status(src.sock)
        self.assertEqual(st["state"], "running")
        self.assertEqual(st["guest_verify_errors"], 0)
        # Only the whole one is listed.
        listed = gwtest.last_json(gwtest.run([VM, "list-backups", "--vm", "web5", "--json"] + store).stdout)
        self.assertEqual([x["id"] for x in listed["backups"]], [b["id"]])
        self.assertEqual(b["method"], "wp", b)
        code, j, err = self.stop(src)
        self.assertEqual(code, 0, err)
        self.assertIn("backup: stopped: its requester cancelled it or went away", err)
        self.assertEqual(j["guest_verify_errors"], 0)
        r = self.restore(store, "web5", "--name", "web5b")
        self.assert_clone_runs(r, b["memory_digest"])

    def test_runner_answers_during_a_backup_and_a_stop_stops_it(self):
        store = self.store_args("dir")
        src, p = self.slow_backup("web6", store)
        # Status answers at once (a watching backup's throttle asks 10 times a second).
        for _ in range(5):
            t0 = time.time()
            st = status(src.sock)
            self.assertLess(time.time() - t0, 1.0)
            self.assertEqual(st["state"], "running")
            self.assertEqual(st["guest_verify_errors"], 0)
        # Other operations are refused with the reason, and change nothing.
        r = gwtest.run([VM, "pause", "--control", src.sock])
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("a backup is in progress", r.stdout + r.stderr)
        self.assertEqual(status(src.sock)["state"], "running")
        self.assertIsNone(p.poll(), "a refused operation ended the backup")
        # A stop stops the backup first (at its next chunk), then the runner.
        r = gwtest.run([VM, "stop", "--control", src.sock])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out, _ = p.communicate(timeout=5)
        j = gwtest.last_json(out)
        self.assertFalse(j["ok"], j)
        self.assertIn("cancelled", j["error"])
        code, out, err = src.finish(timeout=30)
        self.assertEqual(code, 0, err)
        self.assertIn("it stops first", err)
        self.assertIn("backup: stopped, for the VM's stop", err)
        self.assertEqual(gwtest.last_json(out)["guest_verify_errors"], 0)
        listed = gwtest.last_json(gwtest.run([VM, "list-backups", "--vm", "web6", "--json"] + store).stdout)
        self.assertEqual(listed["backups"], [])


class CephFaults(BackupBase):
    """Faults of the Ceph cluster itself: each test has its own bluestore cluster."""

    @classmethod
    def setUpClass(cls):
        gwtest.require_kvm()

    def setUp(self):
        super().setUp()
        self.conf = start_cluster("bluestore")

    def tearDown(self):
        super().tearDown()
        cluster("stop", self.conf)

    def test_osd_killed_mid_backup(self):
        store = self.store_args("rados", "f1") + ["--osd-timeout", "2"]
        src = self.start("web5", ["--memory", "512M", "--guest", "dirtier:ws=384M,rate=16M"])
        first = self.backup(src, store)
        p = subprocess.Popen([VM, "backup", "--control", src.sock, "--json", "--parent", "none"] + store,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.4)
        t0 = time.time()
        cluster("osd-stop", self.conf, "--kill")
        out, err = p.communicate(timeout=120)
        took = time.time() - t0
        j = gwtest.last_json(out)
        self.assertFalse(j["ok"], j)
        self.assertIn("did not answer within 2 s", j["error"])
        # 2 s per attempt and one retry, the writes in flight retried together: a few op
        # timeouts, not one per write in flight.
        sys.stderr.write("  backup failed %.1f s after the OSD was killed: %s\n" % (took, j["error"]))
        self.assertLess(took, 12, j)
        st = status(src.sock)
        self.assertEqual(st["state"], "running")
        self.assertEqual(st["guest_verify_errors"], 0)
        cluster("osd-start", self.conf)
        # Earlier backups still restore, and a retry succeeds.
        deadline = time.time() + 60
        while True:
            again = self.backup(src, store, ok=False)
            if again["ok"] or time.time() > deadline:
                break
            time.sleep(1)
        self.assertTrue(again["ok"], again)
        r = self.restore(store, "web5", "--name", "web5b", "--backup", first["id"])
        self.assert_clone_runs(r, first["memory_digest"])
        listed = gwtest.last_json(gwtest.run([VM, "list-backups", "--vm", "web5", "--json"] + store).stdout)
        self.assertEqual([x["id"] for x in listed["backups"]], [first["id"], again["id"]])

    def test_full_pool_is_an_immediate_clear_error(self):
        store = self.store_args("rados", "f2") + ["--osd-timeout", "30"]
        src = self.start("web6", ["--memory", "128M", "--guest", "dirtier:ws=64M,rate=8M"])
        # Pool quotas need a ceph-mgr (not run here); a full OSD flags the pool full the same way.
        for cmd in (["set-nearfull-ratio", "0.0005"], ["set-backfillfull-ratio", "0.0008"], ["set-full-ratio", "0.001"]):
            subprocess.run(["ceph", "-c", self.conf, "osd"] + cmd, capture_output=True, check=True)
        filler = os.path.join(self.dir, "filler")
        with open(filler, "wb") as f:
            f.write(os.urandom(4 << 20))
        # The OSD reports its usage every few seconds, and later on a loaded machine: wait for the
        # pool's full flag (a backup into a pool not yet flagged rightly succeeds).
        deadline, full = time.time() + 90, False
        while time.time() < deadline and not full:
            try:
                subprocess.run(["rados", "-c", self.conf, "-p", "godwit", "put", "fill%d" % int(time.time() * 1000),
                                filler], capture_output=True, timeout=3)
            except subprocess.TimeoutExpired:
                pass   # a plain client blocks on a full pool: that is what we wait for
            d = subprocess.run(["ceph", "-c", self.conf, "osd", "pool", "ls", "detail"], capture_output=True, text=True)
            # "flags hashpspool,nearfull,full ...": the flag itself, not "nearfull" (set first,
            # at its lower ratio: a backup then rightly succeeds, and CI once failed so).
            flags = (d.stdout.split(" flags ", 1)[-1].split() or [""])[0].split(",")
            full = "full" in flags
            if not full:
                time.sleep(0.5)
        self.assertTrue(full, "the pool was never flagged full: %s" % d.stdout)
        t0 = time.time()
        j = self.backup(src, store, ok=False)
        took = time.time() - t0
        self.assertFalse(j["ok"])
        self.assertIn("full", j["error"])
        self.assertLess(took, 10, j)   # far below the 30 s op timeout: no hang
        self.assertEqual(status(src.sock)["state"], "running")


if __name__ == "__main__":
    unittest.main(verbosity=2)
