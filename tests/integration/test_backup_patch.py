#!/usr/bin/env python3
"""Integration tests for page patches (storage/chunk_patch.h, backup/backup_patch.h) with real
KVM guests and a directory store: a template's backup restored as a clone whose guest changes
about 1% of its memory in scattered pages; the clone's backup stores its changed chunks as
patches over the template's and writes at most 2% of memory as new data (encrypted, so the
patch objects go through AES-256-GCM too); it verifies, and after the template's backup is
deleted and the collector has run, its base chunks are still there: it verifies again and
restores (ordinary and instant) with an equal memory digest and a guest that runs on with 0
verify errors. A clone of a backup that was itself patched layers its patches over the
template's (format 3) and stores only its own pages, restorable after the template's backups
are collected. A VM's own incremental backups patch too. A damaged patch, mid patch or base
is found by verify and refused by restore, which names the object.
Usage: test_backup_patch.py [path/to/godwit-vm]."""
import glob
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402
from test_backup import VM, EXIT_VERIFY, BackupBase, status  # noqa: E402

MEMORY = 256 << 20


class ClonePatches(BackupBase):
    @classmethod
    def setUpClass(cls):
        gwtest.require_kvm()   # a directory store only: no Ceph cluster to start

    @classmethod
    def tearDownClass(cls):
        pass

    def store(self):
        key = os.path.join(self.dir, "key")
        with open(key, "w") as f:
            f.write("5a" * 32 + "\n")
        return self.store_args("dir") + ["--key-file", key]

    def verify(self, store, vm, want=0):
        v = gwtest.run([VM, "verify-backup", "--vm", vm, "--json"] + store)
        vj = gwtest.last_json(v.stdout)
        self.assertEqual(v.returncode, 0 if want == 0 else EXIT_VERIFY, v.stdout + v.stderr)
        self.assertEqual(vj["bad_chunks"], want, vj)
        return vj

    def clone_changes(self, store, vm, name, share):
        """Restores vm's latest backup as a running clone, lets its guest write share of its
        memory (counted by the guest: pages written), pauses it; returns the runner and what
        it wrote."""
        clone = gwtest.Runner(VM, ["restore-backup", "--vm", vm, "--name", name, "--seconds", "120"] + store, self.dir)
        self.runners.append(clone)
        start = None
        deadline = time.time() + 60
        while start is None and time.time() < deadline:
            start = status(clone.sock).get("guest_pages_written")
            time.sleep(0.05)
        self.assertIsNotNone(start, "the clone never answered")
        want = int(MEMORY * share) // 4096
        now = start
        while now - start < want and time.time() < deadline:
            time.sleep(0.02)
            now = status(clone.sock)["guest_pages_written"]
        gwtest.run([VM, "pause", "--control", clone.sock])
        written = (status(clone.sock)["guest_pages_written"] - start) * 4096
        self.assertGreaterEqual(written, want * 4096)
        return clone, written

    def test_clone_with_one_percent_changed_stores_patches(self):
        store = self.store()
        # The template writes random pages of its 96 MiB working set slowly: its clone does too.
        src = self.start("tmpl", ["--memory", "256M", "--guest", "dirtier:ws=96M,rate=4M,pattern=random"])
        base = self.backup(src, store)
        self.assertEqual(base["patched_chunks"], 0)           # nothing to patch over yet
        self.stop(src)
        clone, written = self.clone_changes(store, "tmpl", "clone1", 0.01)
        self.assertLess(written, MEMORY * 0.015)              # about 1%, scattered over the working set
        b = self.backup(clone, store)
        # Nearly every chunk of the working set changed, each in a few pages: patches.
        print("  clone: wrote %d B, backup new_bytes %d (%.4f of memory), %d patched chunks, %d patch bytes" % (
            written, b["new_bytes"], b["new_bytes"] / MEMORY, b["patched_chunks"], b["patched_bytes"]), file=sys.stderr)
        self.assertGreater(b["patched_chunks"], 80, b)
        self.assertLessEqual(b["new_bytes"], MEMORY * 0.02, b)
        self.assertLess(b["patched_bytes"], written * 1.2, b)
        listed = gwtest.last_json(gwtest.run([VM, "list-backups", "--vm", "clone1", "--json"] + store).stdout)
        self.assertEqual([x["id"] for x in listed["backups"]], [b["id"]])
        self.verify(store, "clone1")
        # The template's backup goes and the collector runs: the bases a patch names stay.
        d = gwtest.run([VM, "delete-backup", "--vm", "tmpl", "--backup", base["id"]] + store)
        self.assertEqual(d.returncode, 0, d.stderr)
        g = gwtest.last_json(gwtest.run([VM, "gc", "--json"] + store).stdout)
        self.assertTrue(g["ok"], g)
        self.assertEqual(g["manifests"], 1, g)                # the clone's only
        self.verify(store, "clone1")
        self.assert_clone_runs(self.restore(store, "clone1", "--name", "clone2"), b["memory_digest"])
        # An instant restore rebuilds the patched chunks as it fills, faults included.
        r = self.restore(store, "clone1", "--name", "clone3", "--instant")
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        j = gwtest.last_json(r.stdout)
        self.assertEqual((j["status"], j["guest_verify_errors"]), ("ok", 0), j)
        self.assertEqual(j["instant_memory_digest"], b["memory_digest"])
        self.assertEqual(j["instant_phase"], "complete", j)
        self.assertTrue(j["instant_digest_ok"], j)
        self.assertEqual(j["instant_chunks_placed"], j["instant_chunks_total"])
        gwtest.run([VM, "resume", "--control", clone.sock])
        code, j, err = self.stop(clone)
        self.assertEqual((code, j["guest_verify_errors"]), (0, 0), err)

    def test_clone_of_a_patched_backup_stores_only_its_own_pages(self):
        # The template's latest backup is itself patched (its own incremental): the clone's
        # patches are layered over those (format 3), so they carry only the clone's pages, not
        # the template's patched pages again (3.4 times as many on the benchmark before).
        store = self.store()
        src = self.start("tmpl5", ["--memory", "256M", "--guest", "dirtier:ws=96M,rate=4M,pattern=random"])
        first = self.backup(src, store)
        time.sleep(1.5)                                       # the template writes ~6 MB more
        objects = lambda: set(glob.glob(os.path.join(self.dir, "store", "chunks", "*", "c.*")))  # noqa: E731
        before = objects()
        second = self.backup(src, store)
        second_patches = objects() - before
        self.assertGreater(second["patched_chunks"], 80, second)
        self.stop(src)
        clone, written = self.clone_changes(store, "tmpl5", "clone5", 0.01)
        b = self.backup(clone, store)
        print("  clone of a patched backup: wrote %d B, new_bytes %d (%.4f of memory), %d patched, %d layered, "
              "%d patch bytes; the template's patches %d bytes" % (
                  written, b["new_bytes"], b["new_bytes"] / MEMORY, b["patched_chunks"], b["layered_chunks"],
                  b["patched_bytes"], second["patched_bytes"]), file=sys.stderr)
        self.assertGreater(b["layered_chunks"], 80, b)
        self.assertLessEqual(b["new_bytes"], MEMORY * 0.02, b)
        self.assertLess(b["patched_bytes"], written * 1.2, b)  # the clone's pages, not the template's too
        self.verify(store, "clone5")
        # Both template backups go and the collector runs: the mid patches and bases stay.
        for x in (first, second):
            d = gwtest.run([VM, "delete-backup", "--vm", "tmpl5", "--backup", x["id"]] + store)
            self.assertEqual(d.returncode, 0, d.stderr)
        g = gwtest.last_json(gwtest.run([VM, "gc", "--json"] + store).stdout)
        self.assertTrue(g["ok"], g)
        self.assertEqual(g["manifests"], 1, g)
        self.verify(store, "clone5")
        self.assert_clone_runs(self.restore(store, "clone5", "--name", "clone6"), b["memory_digest"])
        r = self.restore(store, "clone5", "--name", "clone7", "--instant")
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        j = gwtest.last_json(r.stdout)
        self.assertEqual((j["status"], j["guest_verify_errors"]), ("ok", 0), j)
        self.assertEqual(j["instant_memory_digest"], b["memory_digest"])
        self.assertTrue(j["instant_digest_ok"], j)
        # A damaged mid patch is found by verify and refused by restore, naming the layer. The
        # template's patches that outlived the collection are the clone's mids (every chunk of
        # the clone's working set changed, so none is kept as the clone's own patch).
        mids = sorted(second_patches & objects())
        self.assertGreater(len(mids), 80)
        with open(mids[0], "r+b") as f:
            f.seek(200)
            byte = f.read(1)
            f.seek(200)
            f.write(bytes([byte[0] ^ 0x10]))
        vj = self.verify(store, "clone5", want=1)
        self.assertEqual(vj["bad"][0]["chunk"], os.path.basename(mids[0])[2:])
        r = self.restore(store, "clone5", "--name", "clone8")
        self.assertEqual(r.returncode, 1)
        self.assertIn("mid patch", r.stderr)
        gwtest.run([VM, "resume", "--control", clone.sock])
        code, j, err = self.stop(clone)
        self.assertEqual((code, j["guest_verify_errors"]), (0, 0), err)

    def test_own_incrementals_patch_over_whole_chunks(self):
        # A VM's own incremental backups patch what changed a little; a chunk that changes in
        # every backup is a patch over the same whole chunk, layered over the first patch of
        # it when that carries fewer pages (never more than two levels).
        store = self.store_args("dir")
        src = self.start("own1", ["--memory", "256M", "--guest", "dirtier:ws=96M,rate=1M,pattern=random"])
        a = self.backup(src, store)
        time.sleep(1)
        b = self.backup(src, store)
        time.sleep(1)
        c = self.backup(src, store)
        self.assertEqual(a["patched_chunks"], 0)
        for x in (b, c):
            self.assertGreater(x["patched_chunks"], 80, x)
            self.assertLess(x["new_bytes"], 10 << 20, x)       # whole chunks would be ~100 MB
        self.assertEqual(b["layered_chunks"], 0, b)            # a's chunks are whole
        self.assertGreater(c["layered_chunks"], 80, c)         # over b's patches
        self.verify(store, "own1")
        self.assert_clone_runs(self.restore(store, "own1", "--name", "own1b", "--backup", b["id"]), b["memory_digest"])
        self.assert_clone_runs(self.restore(store, "own1", "--name", "own1c"), c["memory_digest"])
        code, j, err = self.stop(src)
        self.assertEqual((code, j["guest_verify_errors"]), (0, 0), err)

    def test_damaged_patch_found_and_refused(self):
        store = self.store_args("dir")
        src = self.start("tmpl2", ["--memory", "128M", "--guest", "dirtier:ws=32M,rate=4M,pattern=random"])
        self.backup(src, store)
        self.stop(src)
        before = set(glob.glob(os.path.join(self.dir, "store", "chunks", "*", "c.*")))
        clone, _ = self.clone_changes(store, "tmpl2", "clone3", 0.005)
        b = self.backup(clone, store)
        self.assertGreater(b["patched_chunks"], 0, b)
        self.stop(clone)
        # A patch the clone's backup wrote (plain store, random pages: stored as they are).
        patches = []
        for c in set(glob.glob(os.path.join(self.dir, "store", "chunks", "*", "c.*"))) - before:
            with open(c, "rb") as f:
                if f.read(60)[52:60] == b"GWPATCH1":
                    patches.append(c)
        self.assertTrue(patches)
        victim = patches[0]
        with open(victim, "r+b") as f:
            f.seek(200)
            byte = f.read(1)
            f.seek(200)
            f.write(bytes([byte[0] ^ 0x10]))
        vj = self.verify(store, "clone3", want=1)
        self.assertEqual(vj["bad"][0]["chunk"], os.path.basename(victim)[2:])
        r = self.restore(store, "clone3", "--name", "clone4")
        self.assertEqual(r.returncode, 1)
        self.assertIn("restore refused", r.stderr)
        self.assertIn("patch", r.stderr)
        # Mended, then the base chunk another patch names is damaged (a plain store: the
        # patch's header, at 24 bytes into the payload, names its base). Restore no longer
        # hashes a base on its own (the rebuilt chunk's check covers it) yet still refuses it
        # and names the base as the bad object.
        with open(victim, "r+b") as f:
            f.seek(200)
            f.write(byte)
        other = sorted(p for p in patches if p != victim)[0] if len(patches) > 1 else victim
        with open(other, "rb") as f:
            base_hex = f.read(52 + 56)[52 + 24:52 + 56].hex()
        base = os.path.join(self.dir, "store", "chunks", base_hex[:2], "c." + base_hex)
        self.assertTrue(os.path.exists(base), base)
        # One byte in every page: a single one could sit in a page the patch replaces, and the
        # rebuilt chunk would then be whole (and rightly restored: seen once in CI, stop 24).
        with open(base, "r+b") as f:
            size = os.fstat(f.fileno()).st_size
            for off in range(4096, size, 4096):
                f.seek(off)
                byte = f.read(1)
                f.seek(off)
                f.write(bytes([byte[0] ^ 0x10]))
        vj = self.verify(store, "clone3", want=1)
        self.assertEqual(vj["bad"][0]["chunk"], base_hex)
        r = self.restore(store, "clone3", "--name", "clone5")
        self.assertEqual(r.returncode, 1)
        self.assertIn("base chunk " + base_hex, r.stderr)
        self.assertIn("does not match its name", r.stderr)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]])
