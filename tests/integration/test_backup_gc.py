#!/usr/bin/env python3
"""Integration tests for retention and garbage collection with real KVM guests, a directory
store and a real throw-away Ceph cluster: backups pruned by keep-last, then collected, and the
kept backup still verifies and restores as a clone with an equal digest; a collection run over
and over while a backup of a running guest is in progress in another process (the VM's
runner), on a store whose orphans that backup reuses, removes none of its chunks: the backup
then verifies and restores.
Usage: test_backup_gc.py [path/to/godwit-vm]."""
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402
from test_backup import VM, BackupBase  # noqa: E402


class PruneAndGc(BackupBase):
    def gc(self, store, *extra):
        r = gwtest.run([VM, "gc", "--json"] + store + list(extra))
        j = gwtest.last_json(r.stdout)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        self.assertTrue(j["ok"], j)
        return j

    def verify_and_restore(self, store, vm, digest):
        v = gwtest.run([VM, "verify-backup", "--vm", vm, "--json"] + store)
        self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
        self.assertEqual(gwtest.last_json(v.stdout)["bad_chunks"], 0)
        self.assert_clone_runs(self.restore(store, vm, "--name", vm + "-clone"), digest)

    def prune_then_gc(self, backend):
        store = self.store_args(backend)
        src = self.start("web1", ["--memory", "256M", "--guest", "dirtier:ws=96M,rate=32M,pattern=random"])
        backups = []
        for _ in range(3):
            backups.append(self.backup(src, store))
            time.sleep(0.3)   # the dirtier changes memory between backups
        dry = gwtest.last_json(gwtest.run([VM, "prune", "--vm", "web1", "--keep-last", "1", "--dry-run", "--json"] + store).stdout)
        self.assertEqual(dry["removed"], 2, dry)
        p = gwtest.run([VM, "prune", "--vm", "web1", "--keep-last", "1", "--json"] + store)
        self.assertEqual(p.returncode, 0, p.stderr + p.stdout)
        pj = gwtest.last_json(p.stdout)
        self.assertEqual((pj["kept"], pj["removed"]), (1, 2), pj)
        kept = [b for b in pj["backups"] if b["action"] == "keep"]
        self.assertEqual(kept[0]["id"], backups[-1]["id"])
        self.assertEqual(kept[0]["reason"], "keep-last")
        listed = gwtest.last_json(gwtest.run([VM, "list-backups", "--vm", "web1", "--json"] + store).stdout)
        self.assertEqual([b["id"] for b in listed["backups"]], [backups[-1]["id"]])
        g = self.gc(store)
        self.assertGreater(g["chunks_removed"], 0, g)
        self.assertGreater(g["bytes_freed"], 0, g)
        self.assertEqual(g["manifests"], 1)
        again = self.gc(store)
        self.assertEqual((again["chunks_removed"], again["candidates"]), (0, 0), again)
        self.assertEqual(again["chunks_scanned"], again["referenced"])
        self.verify_and_restore(store, "web1", backups[-1]["memory_digest"])

    def test_prune_then_gc_dir(self):
        self.prune_then_gc("dir")

    def test_prune_then_gc_rados(self):
        self.prune_then_gc("rados")

    def gc_during_backup(self, backend):
        store = self.store_args(backend)
        src = self.start("web2", ["--memory", "512M", "--guest", "idle:ws=384M"])
        # A backup deleted again: its chunks are orphans, and most of them are what the next
        # backup will find in the store (unchanged memory) and reuse.
        first = self.backup(src, store, "--parent", "none")
        d = gwtest.run([VM, "delete-backup", "--vm", "web2", "--backup", first["id"]] + store)
        self.assertEqual(d.returncode, 0, d.stderr)
        proc = subprocess.Popen([VM, "backup", "--control", src.sock, "--json", "--parent", "none"] + store,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The orphans are the backup's to reuse once it has registered as live (before that a
        # collection may take them, and rightly): the collections start when it shows, which
        # on a loaded machine can take a moment.
        deadline = time.time() + 30
        while proc.poll() is None and time.time() < deadline and not self.gc(store, "--dry-run")["live_backups"]:
            time.sleep(0.05)
        runs, overlapped = [], 0
        while proc.poll() is None:
            j = self.gc(store)
            runs.append(j)
            overlapped += j["live_backups"] > 0
        out, err = proc.communicate()
        b = gwtest.last_json(out)
        self.assertTrue(b["ok"], b)
        self.assertGreater(b["reused_chunks"], 10, b)     # it did reuse the orphans
        self.assertGreater(overlapped, 0, "no collection ran while the backup was in progress: %s" % runs)
        for j in runs:
            if j["live_backups"]:
                self.assertEqual(j["chunks_removed"], 0, j)
        self.verify_and_restore(store, "web2", b["memory_digest"])
        # With the backup done, its chunks are referenced; nothing of it goes.
        after = self.gc(store)
        self.assertEqual(after["live_backups"], 0)
        self.verify_and_restore(store, "web2", b["memory_digest"])

    def test_gc_during_backup_dir(self):
        self.gc_during_backup("dir")

    def test_gc_during_backup_rados(self):
        self.gc_during_backup("rados")


class ScheduleCli(unittest.TestCase):
    """godwit-vm schedule: the next fire times of a cron expression in a zone (no KVM needed)."""

    @gwtest.no_vm
    def test_dst_gap_and_jitter(self):
        # 2026-03-28 00:00 UTC; Berlin skips 02:00-03:00 on the 29th.
        r = gwtest.run([VM, "schedule", "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--after", "1774656000",
                        "--count", "3", "--json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        j = gwtest.last_json(r.stdout)
        self.assertEqual([n["local"] for n in j["next"]],
                         ["2026-03-28 02:30:00", "2026-03-29 03:00:00", "2026-03-30 02:30:00"])
        a = gwtest.last_json(gwtest.run([VM, "schedule", "--cron", "0 2 * * *", "--after", "1774656000", "--jitter", "900",
                                         "--key", "web1", "--json"]).stdout)
        b = gwtest.last_json(gwtest.run([VM, "schedule", "--cron", "0 2 * * *", "--after", "1774656000", "--jitter", "900",
                                         "--key", "web1", "--json"]).stdout)
        self.assertEqual(a, b)                       # the same start for the same VM
        for n in a["next"]:
            self.assertTrue(n["fire"] <= n["start"] < n["fire"] + 900, n)

    @gwtest.no_vm
    def test_bad_expressions_are_usage_errors(self):
        for expr in ("61 * * * *", "* * *", "*/0 * * * *", "@reboot"):
            r = gwtest.run([VM, "schedule", "--cron", expr])
            self.assertEqual(r.returncode, 2, expr)
            self.assertIn("cron", r.stderr)
        r = gwtest.run([VM, "schedule", "--cron", "0 2 * * *", "--tz", "../../etc/passwd"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("IANA", r.stderr)


if __name__ == "__main__":
    sys.exit(gwtest.run_tests())
