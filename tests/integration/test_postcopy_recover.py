#!/usr/bin/env python3
"""Post-copy recovery after a broken link (docs/postcopy.md, postcopy/pc_resume.h), between
two real godwit-vm runners whose streams pass through a TCP relay (tcp_relay.py) that the
test kills to break the link: the destination holds the VM paused and waits, the source
keeps every page and reconnects by itself, and the migration completes with the memory
digest equal and no verify errors; after two cuts in a row too; with the old path gone for
good, the source gives up after its recovery time with a clear error (the VM paused on both
sides, running nowhere) and the operator resumes it through another path (--to)."""
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
import test_migration  # noqa: E402

VM = test_migration.VM
RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tcp_relay.py")


class Relay:
    def __init__(self, target_url, port=0):
        host, tport = target_url.split(":")[1:3]
        self.p = subprocess.Popen([sys.executable, RELAY, str(port), host, tport], stdout=subprocess.PIPE, text=True)
        self.port = json.loads(self.p.stdout.readline())["port"]
        self.url = "tcp:127.0.0.1:%d" % self.port

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


class Recover(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="godwit-pcr-")
        self.pairs, self.relays = [], []

    def tearDown(self):
        for r in self.relays:
            r.kill()
        for p in self.pairs:
            p.kill_all()
        shutil.rmtree(self.dir, ignore_errors=True)

    def relay(self, target, port=0):
        r = Relay(target, port)
        self.relays.append(r)
        return r

    def pair(self, *a, **kw):
        p = test_migration.Pair(self, *a, **kw)
        self.pairs.append(p)
        return p

    def wait_for(self, sock, pred, timeout=30):
        end = time.time() + timeout
        st = None
        while time.time() < end:
            st = test_migration.Pair.status(None, sock)
            if st and pred(st):
                return st
            time.sleep(0.05)
        self.fail("condition not reached on %s; last status %s" % (sock, st))

    def start_slow(self, p, relay, *extra):
        """A post-copy through relay whose background push is slow; returns once active."""
        r = gwtest.run([VM, "migrate", "--control", p.src_sock, "--to", relay.url, "--mode", "postcopy",
                        "--bandwidth", "4M"] + list(extra))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.wait_for(p.src_sock, lambda s: s.get("phase") == "postcopy-active")
        end = time.time() + 20
        while time.time() < end and not os.path.exists(p.dst_sock):
            time.sleep(0.05)
        time.sleep(0.5)

    def cut(self, p, relay):
        """Breaks the link: both sides pause, the destination holds the VM, nothing runs twice."""
        relay.kill()
        dst = self.wait_for(p.dst_sock, lambda s: s.get("phase") in ("postcopy-paused", "postcopy-recover"))
        src = self.wait_for(p.src_sock, lambda s: s.get("phase") in ("postcopy-paused", "postcopy-recover"))
        self.assertIn("lost", dst["migration_error"])
        self.assertEqual(src["state"], "in-doubt", src)
        return src, dst

    def finish(self, p, recoveries):
        src = self.wait_for(p.src_sock, lambda s: s.get("phase") in ("completed",) or s.get("state") == "migrated",
                            timeout=120)
        scode, sj, serr = p.finish_src(timeout=60)
        self.assertEqual(scode, 0, serr)
        self.assertEqual(sj["state"], "migrated", sj)
        self.assertTrue(sj["postcopy_digest_ok"], sj)
        self.assertGreaterEqual(sj["postcopy_recoveries"], recoveries, sj)
        dcode, dj, derr = p.finish_dst(timeout=60)
        self.assertEqual(dcode, 0, derr)
        self.assertEqual(dj["migration_phase"], "completed", dj)
        self.assertTrue(dj["postcopy_digest_ok"], dj)           # memory proved equal
        self.assertEqual(dj["postcopy_pages_resent"], 0, dj)    # no page placed twice
        self.assertEqual(dj["guest_verify_errors"], 0, dj)
        self.assertGreaterEqual(dj["postcopy_recoveries"], recoveries, dj)
        self.assertGreater(dj["guest_pages_verified"], sj["guest_pages_verified"])
        return src, sj, dj

    def test_link_cut_resumes_by_itself(self):
        p = self.pair("dirtier:ws=32M,rate=16M", dst_seconds=12)
        r = self.relay(p.url)
        self.start_slow(p, r)
        src, dst = self.cut(p, r)
        # Held paused while the link is down: the guest makes no progress there.
        st = self.wait_for(p.dst_sock, lambda s: s.get("state") == "paused")
        a = st["guest_ticks"]
        time.sleep(0.5)
        self.assertEqual(p.status(p.dst_sock)["guest_ticks"], a)
        self.relay(p.url, r.port)   # the path is back, on the same address
        self.wait_for(p.dst_sock, lambda s: s.get("phase") == "postcopy-active" and s.get("state") == "running")
        self.finish(p, 1)

    def test_two_cuts_in_a_row(self):
        p = self.pair("dirtier:ws=32M,rate=16M", dst_seconds=14)
        r = self.relay(p.url)
        self.start_slow(p, r)
        for _ in range(2):
            self.cut(p, r)
            r = self.relay(p.url, r.port)
            self.wait_for(p.src_sock, lambda s: s.get("phase") == "postcopy-active", timeout=30)
            time.sleep(0.3)
        self.finish(p, 2)

    def test_gives_up_then_resumes_elsewhere(self):
        p = self.pair("dirtier:ws=32M,rate=16M", dst_seconds=16)
        r = self.relay(p.url)
        self.start_slow(p, r, "--recover-timeout", "2", "--link-timeout-ms", "1500")
        t0 = time.time()
        self.cut(p, r)
        src = self.wait_for(p.src_sock, lambda s: "gave up" in s.get("migration_error", ""), timeout=20)
        self.assertLess(time.time() - t0, 10)
        self.assertEqual(src["phase"], "postcopy-paused")
        self.assertEqual(src["state"], "in-doubt")              # paused here, never resumed by itself
        self.assertIn("paused here", src["migration_error"])
        dst = p.status(p.dst_sock)
        self.assertEqual(dst["state"], "paused")                # and paused there: it runs nowhere
        a = src["guest_pages_written"]
        time.sleep(0.5)
        self.assertEqual(p.status(p.src_sock)["guest_pages_written"], a)
        # Still resolvable by the operator: no other operation is taken meanwhile...
        rr = gwtest.run([VM, "resume", "--control", p.src_sock], timeout=10)
        self.assertNotEqual(rr.returncode, 0)
        # ... and a resume through another path completes it.
        r2 = self.relay(p.url)
        rr = gwtest.run([VM, "resume-migration", "--control", p.src_sock, "--to", r2.url], timeout=10)
        self.assertEqual(rr.returncode, 0, rr.stderr)
        self.finish(p, 1)

    def test_resume_refused_without_paused_postcopy(self):
        p = self.pair("dirtier:ws=16M,rate=8M", dst_seconds=4)
        rr = gwtest.run([VM, "resume-migration", "--control", p.src_sock, "--to", "tcp:127.0.0.1:1"], timeout=10)
        self.assertNotEqual(rr.returncode, 0)
        self.assertIn("no post-copy migration is paused", rr.stderr)


if __name__ == "__main__":
    gwtest.require_kvm()
    unittest.main(verbosity=2)
