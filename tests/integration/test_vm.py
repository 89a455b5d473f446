#!/usr/bin/env python3
"""Integration tests for the VM host (godwit-vm): a real KVM guest runs and counts, is saved
to a file and restored in a new process with equal memory, fails clearly when it
triple-faults, and bad input is refused with a clear error."""
import os
import shutil
import signal
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

VM = gwtest.binary("godwit-vm")


class VmRuns(unittest.TestCase):
    def test_dirtier_runs_and_counts(self):
        r = gwtest.run([VM, "run", "--memory", "64M", "--guest", "dirtier:ws=8M,rate=8M",
                        "--seconds", "2", "--json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        j = gwtest.last_json(r.stdout)
        self.assertEqual(j["status"], "ok")
        # The fill writes every page once (2048), then the rate adds about 8 MiB/s.
        self.assertGreater(j["guest_pages_written"], 2048 + 1000)
        self.assertGreater(j["guest_pages_verified"], 2048)
        self.assertEqual(j["guest_verify_errors"], 0)
        self.assertGreater(j["guest_ticks"], 500)

    def test_idle_touches_working_set_once(self):
        r = gwtest.run([VM, "run", "--memory", "64M", "--guest", "idle:ws=4M,pattern=text",
                        "--seconds", "1", "--json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        j = gwtest.last_json(r.stdout)
        self.assertEqual(j["guest_pages_written"], 1024)
        self.assertGreater(j["guest_pages_verified"], 0)
        self.assertEqual(j["guest_verify_errors"], 0)

    def test_two_vcpus_both_work(self):
        r = gwtest.run([VM, "run", "--memory", "128M", "--vcpus", "2", "--guest",
                        "dirtier:ws=16M,rate=16M,pattern=sparse", "--seconds", "2"])
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [l for l in r.stdout.splitlines() if l.strip().startswith("vcpu ") and "written" in l]
        self.assertEqual(len(lines), 2, r.stdout)
        for l in lines:
            written = int(l.split("written")[1].split(",")[0])
            self.assertGreater(written, 2048, l)

    def test_sigterm_prints_counters(self):
        p = gwtest.subprocess.Popen([VM, "run", "--memory", "64M", "--guest", "dirtier:ws=4M",
                                     "--json"], stdout=gwtest.subprocess.PIPE,
                                    stderr=gwtest.subprocess.PIPE, text=True)
        time.sleep(1.0)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
        self.assertEqual(p.returncode, 0, err)
        j = gwtest.last_json(out)
        self.assertEqual(j["state"], "stopped")
        self.assertGreater(j["guest_pages_written"], 0)


class SaveRestore(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="godwit-test-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def suspend(self, args):
        runner = gwtest.Runner(VM, ["run"] + args, self.dir)
        try:
            time.sleep(1.5)
            snap = os.path.join(self.dir, "vm.snap")
            s = gwtest.run([VM, "save", "--control", runner.sock, "--file", snap, "--stop", "--json"])
            self.assertEqual(s.returncode, 0, s.stderr + s.stdout)
            saved = gwtest.last_json(s.stdout)
            code, out, err = runner.finish()
        finally:
            runner.kill()
        self.assertEqual(code, 0, err)
        self.assertEqual(gwtest.last_json(out)["state"], "suspended")
        return snap, saved

    def test_save_restore_continue(self):
        snap, saved = self.suspend(["--memory", "128M", "--vcpus", "2",
                                    "--guest", "dirtier:ws=32M,rate=16M"])
        self.assertTrue(saved["ok"])
        self.assertEqual(len(saved["memory_digest"]), 32)
        # Zero pages are holes: the file holds the data, not all 128 MiB.
        self.assertLess(os.stat(snap).st_blocks * 512, 100 << 20)
        r = gwtest.run([VM, "restore", "--file", snap, "--seconds", "2", "--json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        j = gwtest.last_json(r.stdout)
        self.assertEqual(j["memory_digest"], saved["memory_digest"])
        self.assertEqual(j["guest_verify_errors"], 0)
        # The guest went on writing where it stopped, and re-verified its whole set.
        self.assertGreater(j["guest_pages_written"], saved["guest_pages_written"] + 1000)
        self.assertGreater(j["guest_pages_verified"], saved["guest_pages_verified"] + 8192)

    def test_corrupt_snapshot_is_refused(self):
        snap, _ = self.suspend(["--memory", "64M", "--guest", "idle:ws=8M"])
        data = bytearray(open(snap, "rb").read(4096 * 3))
        # Flip a byte in the state: the state checksum catches it.
        bad = os.path.join(self.dir, "bad-state.snap")
        shutil.copy(snap, bad)
        with open(bad, "r+b") as f:
            f.seek(4096 + 20)
            b = f.read(1)
            f.seek(4096 + 20)
            f.write(bytes([b[0] ^ 0xff]))
        r = gwtest.run([VM, "restore", "--file", bad, "--seconds", "1"])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("checksum", r.stderr)
        # Truncate: offsets now point past the end.
        short = os.path.join(self.dir, "short.snap")
        with open(short, "wb") as f:
            f.write(bytes(data[:4096 + 100]))
        r = gwtest.run([VM, "restore", "--file", short, "--seconds", "1"])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("truncated or corrupt", r.stderr)
        # Flip a byte of guest memory (the guest's working set): the digest check catches it.
        mem = os.path.join(self.dir, "bad-mem.snap")
        shutil.copy(snap, mem)
        with open(mem, "r+b") as f:
            f.seek(0)
            hdr = f.read(64)
            mem_offset = int.from_bytes(hdr[32:40], "little")
            f.seek(mem_offset + (6 << 20) + 123)
            b = f.read(1)
            f.seek(mem_offset + (6 << 20) + 123)
            f.write(bytes([b[0] ^ 0x5a]))
        r = gwtest.run([VM, "restore", "--file", mem, "--seconds", "1"])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("digest", r.stderr)
        # Not a snapshot at all.
        junk = os.path.join(self.dir, "junk.snap")
        with open(junk, "wb") as f:
            f.write(b"hello" * 2000)
        r = gwtest.run([VM, "restore", "--file", junk])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not a Godwit snapshot", r.stderr)

    def test_failed_save_keeps_vm_running_and_old_snapshot(self):
        runner = gwtest.Runner(VM, ["run", "--memory", "64M", "--guest", "dirtier:ws=4M,rate=4M"], self.dir)
        try:
            time.sleep(1.0)
            good = os.path.join(self.dir, "good.snap")
            s = gwtest.run([VM, "save", "--control", runner.sock, "--file", good])
            self.assertEqual(s.returncode, 0, s.stderr)
            before = open(good, "rb").read(4096)
            # A save into a missing directory fails; the VM runs on and the old file stays.
            s = gwtest.run([VM, "save", "--control", runner.sock, "--file",
                            os.path.join(self.dir, "missing", "x.snap")])
            self.assertNotEqual(s.returncode, 0)
            self.assertIn("No such file", s.stderr)
            st1 = gwtest.run([VM, "status", "--control", runner.sock, "--json"])
            time.sleep(0.5)
            st2 = gwtest.run([VM, "status", "--control", runner.sock, "--json"])
            j1, j2 = gwtest.last_json(st1.stdout), gwtest.last_json(st2.stdout)
            self.assertEqual(j2["state"], "running")
            self.assertGreater(j2["guest_pages_written"], j1["guest_pages_written"])
            self.assertEqual(open(good, "rb").read(4096), before)
            gwtest.run([VM, "stop", "--control", runner.sock])
            code, out, err = runner.finish()
            self.assertEqual(code, 0, err)
        finally:
            runner.kill()

    def test_save_to_a_full_disk(self):
        # A 2 MiB tmpfs cannot hold an 8 MiB working set: the save fails with ENOSPC, leaves
        # no partial file behind, and the VM runs on.
        full = os.path.join(self.dir, "full")
        os.mkdir(full)
        if gwtest.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", full]).returncode != 0:
            self.skipTest("cannot mount a small tmpfs here")
        try:
            runner = gwtest.Runner(VM, ["run", "--memory", "64M", "--guest", "dirtier:ws=8M,rate=4M"], self.dir)
            try:
                time.sleep(1.0)
                s = gwtest.run([VM, "save", "--control", runner.sock, "--file", os.path.join(full, "vm.snap")])
                self.assertNotEqual(s.returncode, 0)
                self.assertIn("No space left on device", s.stderr)
                self.assertEqual(os.listdir(full), [])
                a = gwtest.last_json(gwtest.run([VM, "status", "--control", runner.sock, "--json"]).stdout)
                time.sleep(0.4)
                b = gwtest.last_json(gwtest.run([VM, "status", "--control", runner.sock, "--json"]).stdout)
                self.assertEqual(b["state"], "running")
                self.assertGreater(b["guest_pages_written"], a["guest_pages_written"])
                gwtest.run([VM, "stop", "--control", runner.sock])
                code, out, err = runner.finish()
                self.assertEqual(code, 0, err)
            finally:
                runner.kill()
        finally:
            gwtest.run(["umount", full])

    def test_pause_resume(self):
        runner = gwtest.Runner(VM, ["run", "--memory", "64M", "--guest", "dirtier:ws=4M,rate=8M"], self.dir)
        try:
            time.sleep(0.8)
            p = gwtest.run([VM, "pause", "--control", runner.sock, "--json"])
            self.assertEqual(gwtest.last_json(p.stdout)["state"], "paused")
            a = gwtest.last_json(gwtest.run([VM, "status", "--control", runner.sock, "--json"]).stdout)
            time.sleep(0.5)
            b = gwtest.last_json(gwtest.run([VM, "status", "--control", runner.sock, "--json"]).stdout)
            self.assertEqual(a["guest_pages_written"], b["guest_pages_written"])  # frozen
            gwtest.run([VM, "resume", "--control", runner.sock])
            time.sleep(0.5)
            c = gwtest.last_json(gwtest.run([VM, "status", "--control", runner.sock, "--json"]).stdout)
            self.assertGreater(c["guest_pages_written"], b["guest_pages_written"])
            self.assertEqual(c["guest_verify_errors"], 0)
            gwtest.run([VM, "stop", "--control", runner.sock])
            runner.finish()
        finally:
            runner.kill()


class Failures(unittest.TestCase):
    def test_triple_fault_ends_with_clear_error(self):
        t0 = time.time()
        r = gwtest.run([VM, "run", "--memory", "64M", "--guest", "triple-fault", "--seconds", "30"], timeout=60)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("triple-fault", r.stderr)
        self.assertLess(time.time() - t0, 20)

    @gwtest.no_vm
    def test_bad_guest_spec(self):
        r = gwtest.run([VM, "run", "--guest", "dirtier:ws=banana"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("bad value 'banana' for ws", r.stderr)
        r = gwtest.run([VM, "run", "--guest", "mystery"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown workload", r.stderr)

    @gwtest.no_vm
    def test_working_set_too_large(self):
        r = gwtest.run([VM, "run", "--memory", "64M", "--guest", "dirtier:ws=128M"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("needs", r.stderr)

    @gwtest.no_vm
    def test_bad_memory_and_vcpus(self):
        r = gwtest.run([VM, "run", "--memory", "3M"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("memory must be", r.stderr)
        r = gwtest.run([VM, "run", "--vcpus", "99"])
        self.assertEqual(r.returncode, 2)

    @gwtest.no_vm
    def test_unreachable_control_socket(self):
        r = gwtest.run([VM, "status", "--control", "/nonexistent/sock"])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("cannot reach runner", r.stderr)


if __name__ == "__main__":
    sys.exit(gwtest.run_tests())
