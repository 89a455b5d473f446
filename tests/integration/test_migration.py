#!/usr/bin/env python3
"""Live migration between two real godwit-vm runners on loopback: the guest keeps running on
the destination with no verify errors (the destination proved memory equal before it took the
VM), for idle and dirtying guests, with and without compression, over 1 and 4 streams; a
guest that cannot converge times out and runs on at the source; and every fault leaves the VM
on exactly one host."""
import json
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


def test_hooks():
    """True when godwit-vm was built with GODWIT_TEST_HOOKS (it then takes --test-fault)."""
    return "'--test-fault' requires an argument" in gwtest.run([VM, "run", "--test-fault"], timeout=10).stderr


def fault_args(name):
    """The runner arguments that inject fault `name`. The fault tests are part of the test
    build (make test configures GODWIT_TEST_HOOKS=ON); against a production build, whose
    runner has no way to inject a fault, they cannot run and say so."""
    if not test_hooks():
        raise unittest.SkipTest("godwit-vm built without GODWIT_TEST_HOOKS: no fault injection")
    return ["--test-fault", name]


class Pair:
    """A source runner with a guest and an incoming runner waiting for it."""

    def __init__(self, test, guest, memory="128M", vcpus=1, src_args=(), dst_secret=None, dst_seconds=2,
                 disk=None, dst_args=()):
        self.t = test
        self.dir = test.dir
        self.secret = os.path.join(self.dir, "secret")
        with open(self.secret, "w") as f:
            f.write("test-cluster-secret-0123456789abcdefghij\n")
        dsecret = self.secret
        if dst_secret:
            dsecret = os.path.join(self.dir, "secret2")
            with open(dsecret, "w") as f:
                f.write(dst_secret)
        self.src_sock = os.path.join(self.dir, "src.sock")
        self.dst_sock = os.path.join(self.dir, "dst.sock")
        # The destination names the disk itself: it never takes a path from the wire.
        self.dst = subprocess.Popen([VM, "incoming", "--listen", "tcp:127.0.0.1:0", "--secret-file", dsecret,
                                     "--control", self.dst_sock, "--seconds", str(dst_seconds), "--json"]
                                    + (["--disk", disk] if disk else []) + list(dst_args),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.dst.stdout.readline()
        self.url = json.loads(line)["listening"]
        extra = (["--disk", disk] if disk else []) + list(src_args)
        self.src = subprocess.Popen([VM, "run", "--name", "mig", "--memory", memory, "--vcpus", str(vcpus),
                                     "--guest", guest, "--control", self.src_sock, "--secret-file", self.secret,
                                     "--json"] + extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert gwtest.wait_for_path(self.src_sock), "source runner did not start"
        end = time.time() + 60
        while time.time() < end:
            st = self.status(self.src_sock)
            if st and st.get("guest_ready"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("guest never became ready")

    def status(self, sock):
        r = gwtest.run([VM, "status", "--control", sock, "--json"], timeout=10)
        if r.returncode != 0:
            return None
        return gwtest.last_json(r.stdout)

    def migrate(self, *args, timeout=120):
        r = gwtest.run([VM, "migrate", "--control", self.src_sock, "--to", self.url, "--wait", "--json"] + list(args),
                       timeout=timeout)
        return r.returncode, gwtest.last_json(r.stdout) if "{" in r.stdout else {}, r.stderr

    def finish_src(self, timeout=30):
        out, err = self.src.communicate(timeout=timeout)
        self.src_err = err
        return self.src.returncode, gwtest.last_json(out), err

    def finish_dst(self, timeout=30):
        rest, err = self.dst.communicate(timeout=timeout)
        return self.dst.returncode, (gwtest.last_json(rest) if "{" in rest else {}), err

    def kill_all(self):
        for p in (self.src, self.dst):
            if p.poll() is None:
                p.kill()
                p.communicate()


class Migration(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="godwit-mig-")
        self.pairs = []

    def tearDown(self):
        for p in self.pairs:
            p.kill_all()
        shutil.rmtree(self.dir, ignore_errors=True)

    def pair(self, *a, **kw):
        p = Pair(self, *a, **kw)
        self.pairs.append(p)
        return p

    def assert_moved(self, p, code, final, min_pages=1):
        self.assertEqual(code, 0, final)
        self.assertEqual(final["phase"], "completed", final)
        scode, sj, serr = p.finish_src()
        self.assertEqual(scode, 0, serr)
        self.assertEqual(sj["state"], "migrated")
        self.assertEqual(sj["migration_phase"], "completed")
        dcode, dj, derr = p.finish_dst()
        self.assertEqual(dcode, 0, derr)
        self.assertEqual(dj["status"], "ok", dj)
        self.assertEqual(dj["guest_verify_errors"], 0)
        # The guest went on working at the destination: more pages verified than it had written
        # before, and (for a dirtier) more written than at the source.
        self.assertGreater(dj["guest_pages_verified"], sj["guest_pages_verified"])
        self.assertGreaterEqual(dj["guest_pages_written"], sj["guest_pages_written"])
        self.assertGreaterEqual(sj["migration_pages_zero"] + sj["migration_pages_raw"] + sj["migration_pages_lz4"], min_pages)
        return sj, dj

    def test_idle_guest_one_stream_no_compression(self):
        p = self.pair("idle:ws=32M")
        code, final, err = p.migrate("--streams", "1", "--compress", "none")
        sj, dj = self.assert_moved(p, code, final, min_pages=8192)
        self.assertEqual(sj["migration_pages_lz4"], 0)
        self.assertLess(sj["migration_downtime_ms"], 1000)

    def test_dirtier_four_streams_lz4(self):
        p = self.pair("dirtier:ws=32M,rate=16M,pattern=text")
        code, final, err = p.migrate("--streams", "4", "--compress", "lz4")
        sj, dj = self.assert_moved(p, code, final, min_pages=8192)
        self.assertGreater(sj["migration_pages_lz4"], 1000)   # text compresses
        self.assertGreater(dj["guest_pages_written"], sj["guest_pages_written"])

    def test_two_vcpus_sparse(self):
        p = self.pair("dirtier:ws=32M,rate=8M,pattern=sparse", vcpus=2)
        code, final, err = p.migrate("--streams", "2")
        sj, dj = self.assert_moved(p, code, final)
        self.assertGreater(sj["migration_pages_zero"], 1000)  # sparse pages go as markers

    def test_dirtier_tracked_by_the_kvm_dirty_ring(self):
        # A small ring (1024 entries) under a 2-vCPU dirtier fills between harvests, so the
        # vCPUs collect on full-ring exits too; the destination's digest check proves that no
        # dirtied page was missed.
        p = self.pair("dirtier:ws=32M,rate=32M,pattern=random", vcpus=2, src_args=("--dirty-ring", "1024"))
        code, final, err = p.migrate("--streams", "2")
        sj, dj = self.assert_moved(p, code, final, min_pages=8192)
        self.assertGreater(sj["migration_rounds"], 1)
        self.assertIn("dirty tracking by the KVM dirty ring (1024 entries per vCPU)", p.src_err)

    def test_disk_guest_on_shared_image(self):
        # The image is a path both "hosts" see; the device's own writes into guest RAM are
        # tracked as dirty, and the disk is flushed before the hand-over.
        img = os.path.join(self.dir, "disk.img")
        with open(img, "wb") as f:
            f.truncate(16 << 20)
        p = self.pair("disk", memory="64M", disk=img)
        time.sleep(1.0)
        code, final, err = p.migrate()
        self.assertEqual(code, 0, final)
        scode, sj, serr = p.finish_src()
        self.assertEqual(sj["state"], "migrated")
        dcode, dj, derr = p.finish_dst()
        self.assertEqual(dcode, 0, derr)
        self.assertEqual(dj["disk_verify_errors"], 0)
        self.assertEqual(dj["disk_io_errors"], 0)
        self.assertGreater(dj["disk_blocks_read"], sj["disk_blocks_read"])
        self.assertGreater(dj["disk_blocks_written"], sj["disk_blocks_written"])

    def test_non_converging_guest_times_out_and_runs_on(self):
        p = self.pair("dirtier:ws=32M,rate=256M", dst_seconds=30)
        code, final, err = p.migrate("--bandwidth", "8M", "--downtime-ms", "1", "--timeout", "3", timeout=60)
        self.assertNotEqual(code, 0)
        self.assertEqual(final["phase"], "failed")
        self.assertIn("did not converge", final["migration_error"])
        st = p.status(p.src_sock)
        self.assertEqual(st["state"], "running")
        a = st["guest_pages_written"]
        time.sleep(0.3)
        self.assertGreater(p.status(p.src_sock)["guest_pages_written"], a)
        dcode, dj, derr = p.finish_dst()
        self.assertEqual(dcode, 1)
        self.assertIn("incoming migration failed", derr)

    def test_wrong_secret(self):
        p = self.pair("idle:ws=4M", dst_secret="another-secret-entirely-0123456789abcdef\n", dst_seconds=30)
        code, final, err = p.migrate()
        self.assertNotEqual(code, 0)
        self.assertIn("authentication failed", final.get("migration_error", "") + err)
        self.assertEqual(p.status(p.src_sock)["state"], "running")
        dcode, dj, derr = p.finish_dst()
        self.assertEqual(dcode, 1)
        self.assertIn("authentication failed", derr)

    def fault(self, name, expect_dst):
        p = self.pair("dirtier:ws=16M,rate=8M", src_args=fault_args(name), dst_seconds=30)
        code, final, err = p.migrate()
        self.assertNotEqual(code, 0)
        self.assertEqual(final["phase"], "failed", final)
        st = p.status(p.src_sock)
        self.assertEqual(st["state"], "running")          # resumed at the source
        a = st["guest_pages_written"]
        time.sleep(0.3)
        self.assertGreater(p.status(p.src_sock)["guest_pages_written"], a)
        dcode, dj, derr = p.finish_dst()
        self.assertEqual(dcode, 1)                        # the destination discarded its copy
        self.assertIn(expect_dst, derr)
        self.assertFalse(os.path.exists(p.dst_sock))      # and never served a VM
        return final

    def test_link_closed_before_commit(self):
        self.fault("close-before-commit", "migration aborted")

    def test_link_closed_after_ready_before_go(self):
        self.fault("close-after-ready", "migration aborted")

    def test_digest_mismatch_is_refused(self):
        final = self.fault("corrupt-digest", "memory digest differs")
        self.assertIn("digest", final["migration_error"])

    def test_destination_killed_mid_round(self):
        p = self.pair("dirtier:ws=32M,rate=16M", dst_seconds=30)
        mig = subprocess.Popen([VM, "migrate", "--control", p.src_sock, "--to", p.url, "--bandwidth", "4M",
                                "--wait", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        p.dst.kill()
        out, err = mig.communicate(timeout=90)
        self.assertNotEqual(mig.returncode, 0)
        self.assertEqual(gwtest.last_json(out)["phase"], "failed")
        st = p.status(p.src_sock)
        self.assertEqual(st["state"], "running")
        self.assertEqual(st["guest_verify_errors"], 0)

    def test_source_killed_mid_round(self):
        p = self.pair("dirtier:ws=32M,rate=16M", dst_seconds=30)
        gwtest.run([VM, "migrate", "--control", p.src_sock, "--to", p.url, "--bandwidth", "4M"])
        time.sleep(1.5)
        p.src.kill()
        dcode, dj, derr = p.finish_dst(timeout=120)
        self.assertEqual(dcode, 1)
        self.assertIn("migration aborted", derr)

    def test_bad_requests(self):
        p = self.pair("idle:ws=4M", dst_seconds=30)
        r = gwtest.run([VM, "migrate", "--control", p.src_sock, "--to", "tcp:127.0.0.1:1", "--wait", "--json"])
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(p.status(p.src_sock)["state"], "running")
        r = gwtest.run([VM, "migrate", "--control", p.src_sock, "--to", "carrier-pigeon:x", "--wait"])
        self.assertNotEqual(r.returncode, 0)
        r = gwtest.run([VM, "migrate", "--control", p.src_sock, "--to", "tcp:127.0.0.1:1", "--compress", "zip"])
        self.assertEqual(r.returncode, 2)


class RunState(unittest.TestCase):
    """The source runner's run-state machine: every control request is checked against what
    the VM is doing, so that no request can make a guest run on two hosts."""

    setUp = Migration.setUp
    tearDown = Migration.tearDown
    pair = Migration.pair

    def ctl(self, p, verb, *args, sock=None):
        r = gwtest.run([VM, verb, "--control", sock or p.src_sock, "--json"] + list(args), timeout=30)
        return r.returncode, gwtest.last_json(r.stdout) if "{" in r.stdout else {}

    def assert_refused(self, p, verb, state, why, *args):
        code, j = self.ctl(p, verb, *args)
        self.assertNotEqual(code, 0, "%s accepted in state %s: %s" % (verb, state, j))
        self.assertEqual(j["state"], state, j)
        self.assertIn(why, j["error"])

    def written(self, sock):
        return gwtest.last_json(gwtest.run([VM, "status", "--control", sock, "--json"]).stdout)["guest_pages_written"]

    def test_pause_resume_save_refused_while_migrating(self):
        # 32 MiB at 4 MiB/s: round 0 alone lasts ~8 s, and a 1 MiB/s dirty rate converges.
        p = self.pair("dirtier:ws=32M,rate=1M", dst_seconds=30)
        snap = os.path.join(self.dir, "snap")
        r = gwtest.run([VM, "migrate", "--control", p.src_sock, "--to", p.url, "--bandwidth", "4M", "--json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        # Setup, then the pre-copy rounds: the migration owns pause and resume.
        phases = set()
        for _ in range(3):
            st = p.status(p.src_sock)
            self.assertEqual(st["state"], "migrating", st)
            for verb, args in (("pause", ()), ("resume", ()), ("save", ("--file", snap))):
                self.assert_refused(p, verb, "migrating", "a migration is running", *args)
            code, j = self.ctl(p, "migrate", "--to", p.url)
            self.assertNotEqual(code, 0)
            time.sleep(0.3)
        self.assertFalse(os.path.exists(snap))
        self.assertFalse([f for f in os.listdir(self.dir) if f.startswith("snap")])
        # The guest was never paused by the refused requests: it kept writing.
        a = self.written(p.src_sock)
        time.sleep(0.3)
        self.assertGreater(self.written(p.src_sock), a)
        # After the hand-over: terminal. RESUME must never run the guest here again.
        end = time.time() + 60
        while time.time() < end:
            st = p.status(p.src_sock)
            if st is None or st["state"] != "migrating":
                break
            time.sleep(0.05)
        self.assertIsNotNone(st, "the source left before anyone could see it migrated")
        self.assertEqual(st["state"], "migrated", st)
        for verb, args in (("resume", ()), ("pause", ()), ("save", ("--file", snap))):
            self.assert_refused(p, verb, "migrated", "migrated away", *args)
        scode, sj, serr = p.finish_src()
        self.assertEqual(scode, 0, serr)
        self.assertEqual(sj["state"], "migrated")
        self.assertLessEqual(sj["guest_pages_written"], st["guest_pages_written"])
        dcode, dj, derr = p.finish_dst()
        self.assertEqual(dcode, 0, derr)
        self.assertEqual(dj["guest_verify_errors"], 0)

    def test_migrate_refused_while_paused_and_save_keeps_operator_pause(self):
        p = self.pair("dirtier:ws=8M,rate=8M", dst_seconds=30)
        code, j = self.ctl(p, "pause")
        self.assertEqual((code, j["state"], j["paused_by"]), (0, "paused", "operator"))
        code, j = self.ctl(p, "migrate", "--to", p.url)
        self.assertNotEqual(code, 0)
        # A save of a paused VM leaves it paused (the operator still holds it).
        snap = os.path.join(self.dir, "paused.snap")
        code, j = self.ctl(p, "save", "--file", snap)
        self.assertEqual(code, 0, j)
        self.assertEqual((j["state"], j["paused_by"]), ("paused", "operator"))
        a = self.written(p.src_sock)
        time.sleep(0.3)
        self.assertEqual(self.written(p.src_sock), a)
        code, j = self.ctl(p, "resume")
        self.assertEqual((code, j["state"], j["paused_by"]), (0, "running", ""))
        code, j = self.ctl(p, "resolve", "--keep-source")
        self.assertNotEqual(code, 0)
        self.assertIn("no hand-over is in doubt", j["error"])

    def in_doubt(self, fault):
        p = self.pair("dirtier:ws=16M,rate=8M", src_args=fault_args(fault), dst_seconds=30)
        code, final, err = p.migrate()
        self.assertNotEqual(code, 0)
        self.assertEqual(final["phase"], "in-doubt", final)
        st = p.status(p.src_sock)
        self.assertEqual((st["state"], st["paused_by"]), ("in-doubt", "in-doubt"))
        snap = os.path.join(self.dir, "doubt.snap")
        for verb, args in (("resume", ()), ("pause", ()), ("save", ("--file", snap)), ("migrate", ("--to", p.url))):
            self.assert_refused(p, verb, "in-doubt", "in doubt", *args)
        a = self.written(p.src_sock)
        time.sleep(0.3)
        self.assertEqual(self.written(p.src_sock), a, "an in-doubt VM ran at the source")
        return p

    def test_in_doubt_never_started_there_keep_source(self):
        p = self.in_doubt("drop-go")
        dcode, dj, derr = p.finish_dst()
        self.assertEqual(dcode, 1, derr)                  # GO never came: discarded there
        code, j = self.ctl(p, "resolve", "--keep-source")
        self.assertEqual((code, j["state"]), (0, "running"), j)
        a = self.written(p.src_sock)
        time.sleep(0.3)
        self.assertGreater(self.written(p.src_sock), a)

    def test_in_doubt_running_there_keep_destination(self):
        p = self.in_doubt("close-after-go")
        self.assertTrue(gwtest.wait_for_path(p.dst_sock), "the destination did not take the VM after GO")
        st = p.status(p.dst_sock)
        self.assertEqual(st["state"], "running", st)
        code, j = self.ctl(p, "resolve", "--keep-destination")
        self.assertEqual((code, j["state"]), (0, "migrated"), j)
        self.assert_refused(p, "resume", "migrated", "migrated away")
        scode, sj, serr = p.finish_src()
        self.assertEqual((scode, sj["state"]), (0, "migrated"), serr)
        dcode, dj, derr = p.finish_dst()
        self.assertEqual(dcode, 0, derr)
        self.assertEqual(dj["guest_verify_errors"], 0)


if __name__ == "__main__":
    gwtest.require_kvm()
    unittest.main(verbosity=2)
