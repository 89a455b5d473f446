#!/usr/bin/env python3
"""Integration tests for instant restore (backup/instant_restore.c) with real KVM guests, a
local directory store and a real throw-away Ceph cluster (scripts/ceph-cluster):
a running dirtier's backup restored with --instant runs while its memory fills (it faults
chunks in) and ends with the backup's digest and 0 verify errors, from both backends; a disk
guest's blocks verify; the store made unreachable (the directory store's chunks gone, a Ceph
OSD stopped mid-fill) pauses the guest (pause owner "store", with the reason) and its return
resumes it to an equal digest; a chunk corrupted in the store
fails the restore with the chunk's name and the guest is stopped, never run on it.
Usage: test_instant_restore.py [path/to/godwit-vm]."""
import glob
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
HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER = os.path.join(HERE, "..", "..", "scripts", "ceph-cluster")
EXIT_VM_FAILED = 1


def status(sock):
    return gwtest.last_json(gwtest.run([VM, "status", "--control", sock, "--json"]).stdout)


def wait_status(sock, pred, timeout=20.0):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            last = status(sock)
        except Exception:  # the runner may be busy for a moment
            last = None
        if last and pred(last):
            return last
        time.sleep(0.05)
    raise AssertionError("status never matched; last: %r" % (last,))


class InstantBase(unittest.TestCase):
    def setUp(self):
        gwtest.require_kvm()
        self.dir = tempfile.mkdtemp(prefix="godwit-instant-")
        self.runners = []

    def tearDown(self):
        for r in self.runners:
            r.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, name, args):
        r = gwtest.Runner(VM, ["run", "--name", name, "--seconds", "120"] + args, self.dir)
        self.runners.append(r)
        wait_status(r.sock, lambda s: s.get("guest_ready"), 30)
        return r

    def backup(self, runner, store):
        r = gwtest.run([VM, "backup", "--control", runner.sock, "--json"] + store, timeout=300)
        j = gwtest.last_json(r.stdout)
        self.assertTrue(j["ok"], j)
        return j

    def stop(self, runner):
        gwtest.run([VM, "stop", "--control", runner.sock])
        code, out, err = runner.finish()
        return code, gwtest.last_json(out), err

    def restore_instant(self, store, vm, *extra, seconds=3):
        return gwtest.run([VM, "restore-backup", "--vm", vm, "--instant", "--seconds", str(seconds), "--json"]
                          + store + list(extra), timeout=300)

    def assert_filled_while_running(self, j, digest):
        self.assertEqual(j["status"], "ok", j)
        self.assertEqual(j["instant_phase"], "complete", j)
        self.assertTrue(j["instant_digest_ok"], j)
        self.assertEqual(j["instant_memory_digest"], digest)
        self.assertEqual(j["instant_chunks_placed"], j["instant_chunks_total"])
        self.assertEqual(j["guest_verify_errors"], 0)
        self.assertGreater(j["guest_pages_verified"], 0)
        self.assertGreater(j["guest_pages_written"], 0)
        # The guest ran before its memory was all in: it waited for pages the fill had not
        # placed yet, and it was seen running before the fill ended.
        self.assertGreater(j["instant_pages_faulted"], 0, j)
        self.assertGreater(j["instant_first_run_mono_ns"], 0, j)
        fill_end = j["instant_start_mono_ns"] + j["instant_fill_ms"] * 1e6
        self.assertLess(j["instant_first_run_mono_ns"], fill_end, j)

    def dirtier_backup(self, store, name, memory="256M"):
        src = self.start(name, ["--memory", memory, "--guest", "dirtier:ws=96M,rate=32M,pattern=random"])
        b = self.backup(src, store)
        return src, b


class InstantRestore(InstantBase):
    def test_running_dirtier_dir(self):
        store = ["--store", "dir:" + os.path.join(self.dir, "store")]
        src, b = self.dirtier_backup(store, "web1")
        r = self.restore_instant(store, "web1", "--name", "web1b")
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        self.assert_filled_while_running(gwtest.last_json(r.stdout), b["memory_digest"])
        code, j, err = self.stop(src)
        self.assertEqual(j["guest_verify_errors"], 0)

    def test_disk_guest_blocks_verify(self):
        img = os.path.join(self.dir, "disk.img")
        with open(img, "wb") as f:
            f.truncate(16 << 20)
        store = ["--store", "dir:" + os.path.join(self.dir, "store")]
        src = self.start("disk1", ["--memory", "64M", "--guest", "disk", "--disk", img])
        time.sleep(1)
        b = self.backup(src, store)
        self.assertEqual(b["disk_bytes"], 16 << 20)
        clone_img = os.path.join(self.dir, "clone.img")
        # A pace without --instant, or a pace of nothing, is refused before anything starts.
        for extra in (["--fill-rate", "8M"], ["--instant", "--fill-rate", "0"]):
            bad = gwtest.run([VM, "restore-backup", "--vm", "disk1", "--name", "disk1x"] + store + extra)
            self.assertNotEqual(bad.returncode, 0, bad.stdout)
            self.assertIn("--fill-rate", bad.stderr)
        # The fill is paced (16 MiB of disk at 8 MiB/s) so that the guest, however slow this
        # machine is at the moment, reaches chunks the fill has not: the device must fetch them.
        r = self.restore_instant(store, "disk1", "--name", "disk1b", "--disk", clone_img, "--fill-rate", "8M",
                                 seconds=5)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        j = gwtest.last_json(r.stdout)
        self.assertEqual(j["instant_phase"], "complete", j)
        self.assertTrue(j["instant_digest_ok"])
        self.assertEqual(j["disk_verify_errors"], 0, r.stderr)
        self.assertEqual(j["disk_io_errors"], 0)
        self.assertGreater(j["disk_blocks_read"], 100)
        # The disk filled behind the device while the guest used it.
        self.assertGreater(j["instant_disk_chunks_total"], 0)
        self.assertEqual(j["instant_disk_chunks_done"], j["instant_disk_chunks_total"])
        self.assertGreater(j["instant_disk_chunks_demand"] + j["instant_disk_chunks_overwritten"], 0, j)
        self.stop(src)

    def test_store_outage_pauses_and_resumes(self):
        sdir = os.path.join(self.dir, "store")
        store = ["--store", "dir:" + sdir]
        src, b = self.dirtier_backup(store, "web3")
        self.stop(src)
        # The chunks go away after the manifest is read: the guest starts and finds nothing.
        chunks, away = os.path.join(sdir, "chunks"), os.path.join(sdir, "chunks.away")
        os.rename(chunks, away)
        restored = False
        try:
            rr = gwtest.Runner(VM, ["restore-backup", "--vm", "web3", "--name", "web3b", "--instant",
                                    "--stall-ms", "300", "--seconds", "60"] + store, self.dir)
            self.runners.append(rr)
            s = wait_status(rr.sock, lambda s: s.get("instant_phase") == "stalled" and "store" in s["paused_by"])
            self.assertEqual(s["state"], "paused", s)
            self.assertIn("unreachable", s["instant_error"])
            self.assertIn("missing from the store", s["instant_error"])
            self.assertGreater(s["instant_read_errors"], 0)
            # An operator cannot run a guest that only waits for the store.
            res = gwtest.last_json(gwtest.run([VM, "resume", "--control", rr.sock, "--json"]).stdout)
            self.assertFalse(res["ok"])
            self.assertIn("store", res["error"])
            time.sleep(0.5)
            os.rename(away, chunks)
            restored = True
            s = wait_status(rr.sock, lambda s: s.get("instant_phase") == "complete" and s["state"] == "running")
            self.assertEqual(s["paused_by"], "")
            time.sleep(1)
            first = status(rr.sock)["guest_pages_written"]
            time.sleep(0.5)
            self.assertGreater(status(rr.sock)["guest_pages_written"], first)   # it runs again
            code, j, err = self.stop(rr)
        finally:
            if not restored:
                os.rename(away, chunks)
        self.assertEqual(code, 0, err)
        self.assertTrue(j["instant_digest_ok"], j)
        self.assertEqual(j["instant_memory_digest"], b["memory_digest"])
        self.assertGreaterEqual(j["instant_stalls"], 1)
        self.assertEqual(j["guest_verify_errors"], 0)

    def test_hostile_chunk_stops_the_guest(self):
        sdir = os.path.join(self.dir, "store")
        store = ["--store", "dir:" + sdir]
        src, b = self.dirtier_backup(store, "web4")
        self.stop(src)
        # The largest chunk: guest data, which the fill reaches whether the guest touches it or not.
        victim = max(glob.glob(os.path.join(sdir, "chunks", "*", "c.*")), key=os.path.getsize)
        with open(victim, "r+b") as f:
            f.seek(4096)
            byte = f.read(1)
            f.seek(4096)
            f.write(bytes([byte[0] ^ 0x10]))
        name = os.path.basename(victim)[2:]
        r = self.restore_instant(store, "web4", "--name", "web4b", seconds=10)
        self.assertEqual(r.returncode, EXIT_VM_FAILED, r.stdout + r.stderr)
        j = gwtest.last_json(r.stdout)
        self.assertEqual(j["state"], "failed", j)
        self.assertEqual(j["instant_phase"], "failed")
        self.assertIn(name, j["instant_error"])
        self.assertIn("instant restore failed", j["error"])
        self.assertLess(j["instant_chunks_placed"], j["instant_chunks_total"])
        self.assertFalse(j["instant_digest_ok"])
        self.assertLess(j["uptime_ms"], 9000)   # stopped at once, not run to --seconds
        self.assertEqual(j["guest_verify_errors"], 0)


class InstantRestoreRados(InstantBase):
    conf = None
    ceph_store = "memstore"

    @classmethod
    def setUpClass(cls):
        gwtest.require_kvm()
        r = subprocess.run([CLUSTER, "start", "--store", cls.ceph_store], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError("ceph-cluster start failed:\n" + r.stdout + r.stderr)
        cls.conf = r.stdout.strip().splitlines()[-1]

    @classmethod
    def tearDownClass(cls):
        if cls.conf:
            subprocess.run([CLUSTER, "stop", cls.conf], capture_output=True, timeout=120)

    def test_running_dirtier_rados(self):
        store = ["--store", "rados:godwit/i%d" % (int(time.time() * 1e6) % 10**9), "--ceph-conf", self.conf]
        src, b = self.dirtier_backup(store, "web5")
        r = self.restore_instant(store, "web5", "--name", "web5b")
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        self.assert_filled_while_running(gwtest.last_json(r.stdout), b["memory_digest"])
        self.stop(src)


class InstantRestoreCephFaults(InstantRestoreRados):
    ceph_store = "bluestore"   # the OSD keeps its data when it is stopped mid-fill
    test_running_dirtier_rados = None

    def test_osd_stopped_mid_fill_pauses_and_resumes(self):
        store = ["--store", "rados:godwit/o%d" % (int(time.time() * 1e6) % 10**9), "--ceph-conf", self.conf]
        src = self.start("web6", ["--memory", "1G", "--guest", "dirtier:ws=768M,rate=32M,pattern=random"])
        b = self.backup(src, store)
        self.stop(src)
        store += ["--osd-timeout", "2"]
        # One read at a time: the fill takes long enough to stop the OSD in the middle of it.
        rr = gwtest.Runner(VM, ["restore-backup", "--vm", "web6", "--name", "web6b", "--instant", "--inflight", "1",
                                "--stall-ms", "1000", "--seconds", "90"] + store, self.dir)
        self.runners.append(rr)
        stopped = False
        try:
            subprocess.run([CLUSTER, "osd-stop", self.conf, "--kill"], capture_output=True, timeout=60, check=True)
            stopped = True
            s = wait_status(rr.sock, lambda s: s.get("instant_phase") == "complete" or "store" in s["paused_by"], 60)
            self.assertEqual(s["instant_phase"], "stalled", "the fill ended before the OSD stopped: %r" % s)
            self.assertLess(s["instant_chunks_placed"], s["instant_chunks_total"])
            self.assertEqual(s["state"], "paused")
            self.assertIn("unreachable", s["instant_error"])
            subprocess.run([CLUSTER, "osd-start", self.conf], capture_output=True, timeout=120, check=True)
            stopped = False
            s = wait_status(rr.sock, lambda s: s.get("instant_phase") == "complete" and s["state"] == "running", 120)
            code, j, err = self.stop(rr)
        finally:
            if stopped:
                subprocess.run([CLUSTER, "osd-start", self.conf], capture_output=True, timeout=120)
        self.assertEqual(code, 0, err)
        self.assertEqual(j["instant_memory_digest"], b["memory_digest"])
        self.assertTrue(j["instant_digest_ok"])
        self.assertGreaterEqual(j["instant_stalls"], 1)
        self.assertEqual(j["guest_verify_errors"], 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
