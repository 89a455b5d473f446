#!/usr/bin/env python3
"""virtio-net on a tap with the net-echo guest (guest/workload_net.c): numbered frames sent
from the host side of the tap are answered by the guest; the guest keeps answering after a
save and a restore (which announces its MAC with a RARP frame); and across a live migration
between two runners on one multi-queue tap, with a frame stream running, frames lost during
the switchover are counted and reported, none may be lost outside the pause, and the
destination announces the MAC. Skips (77) without /dev/kvm or without the right to create a
tap. Usage: test_net.py [path/to/godwit-vm]."""
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
import nettest  # noqa: E402

VM = gwtest.binary("godwit-vm")


class NetTest(unittest.TestCase):
    def setUp(self):
        self.tap = nettest.Tap()
        self.dir = tempfile.mkdtemp(prefix="gw-net-")
        self.procs = []
        self.echo = nettest.Echo(self.tap.name)

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        self.echo.close()
        self.tap.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def spawn(self, args):
        p = subprocess.Popen([VM] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def run_echo_vm(self, name="net"):
        sock = os.path.join(self.dir, name + ".sock")
        p = self.spawn(["run", "--name", name, "--guest", "net-echo", "--memory", "64M", "--net",
                        "tap:" + self.tap.name, "--control", sock, "--json"])
        self.assertTrue(gwtest.wait_for_path(sock), "runner did not start")
        self.assertTrue(self.echo.wait_ready(30), "the guest never answered")
        return p, sock

    def pings(self, first, n):
        rtts = [self.echo.ping(first + i, 1.0) for i in range(n)]
        return [r for r in rtts if r is not None]

    def test_echo_numbered_frames(self):
        p, sock = self.run_echo_vm()
        ok = self.pings(0, 200)
        self.assertEqual(len(ok), 200, "every numbered frame is answered")
        self.assertEqual(self.echo.guest_mac[:3], b"\x52\x54\x00")
        ok.sort()
        print("\n  200 echoes: p50 %.0f us, p99 %.0f us" % (ok[100] * 1e6, ok[197] * 1e6))
        gwtest.run([VM, "stop", "--control", sock])
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 0, err)

    def test_save_and_restore_keep_answering_and_announce(self):
        p, sock = self.run_echo_vm()
        self.assertEqual(len(self.pings(0, 20)), 20)
        snap = os.path.join(self.dir, "snap")
        r = gwtest.run([VM, "save", "--control", sock, "--file", snap, "--stop"], timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        p.communicate(timeout=30)
        self.assertIsNone(self.echo.ping(10**6, 0.3), "a stopped guest must not answer")
        rarps_before = len(self.echo.rarps)
        q = self.spawn(["restore", "--file", snap, "--net", "tap:" + self.tap.name, "--seconds", "20", "--json"])
        self.assertTrue(self.echo.wait_ready(30), "the restored guest never answered")
        self.assertEqual(len(self.pings(100, 50)), 50)
        self.assertGreater(len(self.echo.rarps), rarps_before, "the restored device announces its MAC")
        self.assertEqual(self.echo.rarps[-1][1], self.echo.guest_mac)
        q.terminate()
        q.communicate(timeout=30)
        # Restoring without a network when the state has one is refused with its reason.
        r = gwtest.run([VM, "restore", "--file", snap, "--seconds", "1"], timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--net", r.stderr)

    def test_migration_mid_stream_counts_lost_frames(self):
        secret = os.path.join(self.dir, "secret")
        with open(secret, "w") as f:
            f.write("test-cluster-secret-0123456789-0123456789\n")   # >= 32 bytes
        dst = self.spawn(["incoming", "--listen", "tcp:127.0.0.1:0", "--secret-file", secret, "--net",
                          "tap:" + self.tap.name, "--seconds", "6", "--json"])
        url = json.loads(dst.stdout.readline())["listening"]
        src, sock = self.run_echo_vm("mig")
        stream = nettest.Stream(self.echo, 0.002)
        stream.start()
        time.sleep(1.5)
        t0 = time.monotonic()
        r = gwtest.run([VM, "migrate", "--control", sock, "--to", url, "--secret-file", secret, "--wait",
                        "--json"], timeout=120)
        took = time.monotonic() - t0
        time.sleep(1.5)
        stream.finish(linger_s=0.5)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        final = gwtest.last_json(r.stdout)
        self.assertEqual(final["phase"], "completed", final)
        # The pause ends when the destination runs, which its RARP announcement marks (sent
        # within a millisecond of the start); it began the measured downtime before that.
        downtime = final["measured_downtime_ms"] / 1000.0
        announced = [t for t, m in self.echo.rarps if t >= t0 and m == self.echo.guest_mac]
        self.assertTrue(announced, "the destination announced the guest's MAC")
        pause = (announced[0] - downtime - 0.002, announced[0])
        rep = stream.report(pause)
        rep["downtime_ms"] = final["measured_downtime_ms"]
        rep["migration_s"] = round(took, 2)
        print("\n  migration mid-stream: " + json.dumps(rep))
        if rep["frames_lost"]:
            print("  lost (seq, ms after the pause began): %s" % stream.lost_detail)
            if os.environ.get("GW_NET_DEBUG"):
                got = dict(stream.replies)
                lo = min(q for q, _ in stream.lost_detail) - 15
                for q in range(lo, lo + 30):
                    print("   seq %d sent %+.2f ms reply %s" % (q, (stream.sent[q] - pause[0]) * 1000,
                          "%+.2f" % ((got[q] - pause[0]) * 1000) if q in got else "LOST"))
        src.communicate(timeout=30)
        out, err = dst.communicate(timeout=60)
        self.assertEqual(dst.returncode, 0, err)
        # The guest answers at the destination: replies to frames sent after the switchover.
        last_sent = max(stream.sent)
        self.assertTrue(any(q > last_sent - 200 for q, _ in stream.replies), "no replies after the move")
        self.assertEqual(rep["frames_lost_outside_pause"], 0, rep)
        self.assertLess(rep["frames_lost"], rep["frames_sent"] // 2, rep)


def require_tap():
    """Exit 77 (skipped) where this process may not create a tap. Checked here, not in setUp:
    a SystemExit raised in setUp is an error of that test to unittest, not a skip."""
    try:
        nettest.Tap().close()
    except (PermissionError, FileNotFoundError) as e:
        print("SKIP: %s" % e)
        sys.exit(gwtest.SKIP)


if __name__ == "__main__":
    gwtest.require_kvm()
    require_tap()
    unittest.main(verbosity=2)
