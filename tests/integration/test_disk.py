#!/usr/bin/env python3
"""Integration tests for the disk workload (guest/workload_disk.c) on the virtio-blk device:
the guest writes, reads back and verifies blocks; the image holds exactly the block format
guest/abi.h documents; a guest saved with its disk and restored keeps verifying; and a block
corrupted in the image while the VM is suspended is caught by the restored guest (so the
verifier can fail). Usage: test_disk.py [path/to/godwit-vm] (or env GODWIT_VM)."""
import os
import shutil
import struct
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

VM = gwtest.binary("godwit-vm")

IMAGE_BYTES = 16 << 20
BLOCK = 4096           # the guest's default disk:block
SEED = 1               # the guest's default seed
EXIT_VERIFY = 3

# The block format of guest/abi.h (GW_DISK_*).
MAGIC = struct.unpack("<Q", b"GWDISKB1")[0]
KEY_SALT = 0x6469736B
SUM_INIT = 0x6A09E667F3BCC908
HEADER_WORDS = 5
M64 = (1 << 64) - 1


def mix64(x):
    """splitmix64's finaliser, as gw_mix64 in guest/rt.h."""
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def parse_block(data):
    """(magic, seed, block, gen, block_bytes, checksum) of one block's header."""
    magic, seed, block, genbb, csum = struct.unpack_from("<5Q", data)
    return magic, seed, block, genbb & 0xFFFFFFFF, genbb >> 32, csum


def block_problems(data, index):
    """What is wrong with the block at index in the image (an empty list when nothing)."""
    words = struct.unpack("<%dQ" % (len(data) // 8), data)
    magic, seed, block, gen, bb, csum = parse_block(data)
    problems = []
    if magic != MAGIC:
        return ["magic %#x" % magic]
    if seed != SEED or block != index or bb != len(data) or gen == 0:
        problems.append("header seed=%d block=%d gen=%d bytes=%d" % (seed, block, gen, bb))
    h = SUM_INIT
    for i, w in enumerate(words):
        if i != 4:
            h = mix64(h ^ w)
    if h != csum:
        problems.append("checksum %#x, computed %#x" % (csum, h))
    key = mix64(mix64(seed ^ KEY_SALT) ^ mix64(block) ^ (gen << 32))
    bad = [i for i in range(HEADER_WORDS, len(words)) if words[i] != mix64(key ^ (i * 8))]
    if bad:
        problems.append("%d payload words differ, first at byte %d" % (len(bad), bad[0] * 8))
    return problems


def make_image(path):
    with open(path, "wb") as f:
        f.truncate(IMAGE_BYTES)


def read_block(path, index):
    with open(path, "rb") as f:
        f.seek(index * BLOCK)
        return f.read(BLOCK)


def disk_args(img, seconds):
    return ["--memory", "64M", "--guest", "disk", "--disk", img, "--seconds", str(seconds),
            "--json"]


class DiskWorkload(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="godwit-disk-")
        self.img = os.path.join(self.dir, "disk.img")
        make_image(self.img)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def assert_healthy(self, r):
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        j = gwtest.last_json(r.stdout)
        self.assertEqual(j["status"], "ok", j)
        self.assertEqual(j["disk_verify_errors"], 0, r.stderr)
        self.assertEqual(j["disk_io_errors"], 0, r.stderr)
        return j

    def test_writes_reads_verifies_and_image_holds_blocks(self):
        r = gwtest.run([VM, "run"] + disk_args(self.img, 3))
        j = self.assert_healthy(r)
        # The whole 16 MiB (4096 blocks) is filled once, then blocks are rewritten and
        # read back every tick.
        nblocks = IMAGE_BYTES // BLOCK
        self.assertGreater(j["disk_blocks_written"], nblocks)
        self.assertGreater(j["disk_blocks_read"], 1000)
        # Every block of the image carries our header; a sample is checked in full.
        with open(self.img, "rb") as f:
            image = f.read()
        gens = []
        for i in range(nblocks):
            magic, seed, block, gen, bb, _ = parse_block(image[i * BLOCK:(i + 1) * BLOCK])
            self.assertEqual((magic, seed, block, bb), (MAGIC, SEED, i, BLOCK), "block %d" % i)
            self.assertGreaterEqual(gen, 1)
            gens.append(gen)
        # Random rewrites after the fill leave some blocks at later generations.
        self.assertGreater(max(gens), 1)
        rewritten = gens.index(max(gens))
        for i in sorted({0, 1, nblocks // 2, nblocks - 1, rewritten}):
            self.assertEqual(block_problems(image[i * BLOCK:(i + 1) * BLOCK], i), [],
                             "block %d" % i)
        # The checker itself can fail: one flipped payload byte.
        bad = bytearray(image[:BLOCK])
        bad[1000] ^= 0x01
        self.assertTrue(block_problems(bytes(bad), 0))

    def test_image_smaller_than_a_block_fails_clearly(self):
        tiny = os.path.join(self.dir, "tiny.img")
        with open(tiny, "wb") as f:
            f.truncate(1024)
        r = gwtest.run([VM, "run", "--memory", "64M", "--guest", "disk", "--disk", tiny,
                        "--seconds", "2", "--json"])
        self.assertEqual(r.returncode, 1, r.stderr)
        j = gwtest.last_json(r.stdout)
        self.assertEqual(j["status"], "error")
        self.assertIn("disk", j["error"])

    def test_one_image_one_writer(self):
        """A second VM on an image that a running VM holds is refused (the image's lock), and
        an image named through a symbolic link is not opened."""
        first = gwtest.Runner(VM, ["run"] + disk_args(self.img, 0)[:-1], self.dir)
        try:
            time.sleep(1.0)
            r = gwtest.run([VM, "run"] + disk_args(self.img, 1), timeout=60)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("in use: another VM or host holds its lock", r.stderr)
        finally:
            first.kill()
        link = os.path.join(self.dir, "link.img")
        os.symlink(self.img, link)
        r = gwtest.run([VM, "run"] + disk_args(link, 1), timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("symbolic link", r.stderr)

    def suspend(self):
        """Runs the disk guest, saves it with --stop; returns (snapshot, runner's JSON)."""
        runner = gwtest.Runner(VM, ["run"] + disk_args(self.img, 0)[:-1], self.dir)
        try:
            time.sleep(1.5)
            snap = os.path.join(self.dir, "vm.snap")
            s = gwtest.run([VM, "save", "--control", runner.sock, "--file", snap, "--stop",
                            "--json"])
            self.assertEqual(s.returncode, 0, s.stderr + s.stdout)
            code, out, err = runner.finish()
        finally:
            runner.kill()
        self.assertEqual(code, 0, err)
        j = gwtest.last_json(out)
        self.assertEqual(j["state"], "suspended")
        self.assertEqual(j["disk_verify_errors"], 0, err)
        self.assertGreater(j["disk_blocks_read"], 0)
        return snap, j

    def test_save_restore_keeps_verifying_and_catches_corruption(self):
        snap, saved = self.suspend()
        # The disk as it was at the save, for the second restore below (the first one
        # writes to self.img).
        img2 = os.path.join(self.dir, "disk2.img")
        shutil.copy(self.img, img2)

        r = gwtest.run([VM, "restore", "--file", snap, "--disk", self.img, "--seconds", "2",
                        "--json"])
        j = self.assert_healthy(r)
        # Counters live in guest memory: they go on from the saved values.
        self.assertGreater(j["disk_blocks_written"], saved["disk_blocks_written"] + 100)
        self.assertGreater(j["disk_blocks_read"], saved["disk_blocks_read"] + 1000)

        # Corrupt blocks the guest wrote before the save (every 64th: random rewrites may
        # repair a few before the verifier reaches them, not all 64).
        with open(img2, "r+b") as f:
            for i in range(0, IMAGE_BYTES // BLOCK, 64):
                f.seek(i * BLOCK)
                self.assertEqual(parse_block(f.read(BLOCK))[0], MAGIC, "block %d" % i)
                f.seek(i * BLOCK + 2048)
                f.write(b"\xde\xad\xbe\xef")
        r = gwtest.run([VM, "restore", "--file", snap, "--disk", img2, "--seconds", "2",
                        "--json"])
        self.assertEqual(r.returncode, EXIT_VERIFY, r.stderr + r.stdout)
        j = gwtest.last_json(r.stdout)
        self.assertGreater(j["disk_verify_errors"], 0)
        # Only the corrupted blocks fail, at most once per verify pass over the disk.
        passes = (j["disk_blocks_read"] - saved["disk_blocks_read"]) // (IMAGE_BYTES // BLOCK) + 1
        self.assertLessEqual(j["disk_verify_errors"], passes * IMAGE_BYTES // BLOCK // 64)
        self.assertEqual(j["disk_io_errors"], 0)
        self.assertIn("corrupt block", r.stderr)
        # The guest describes its first errors on the console: "disk:   block=N".
        named = [int(l.split("=")[1]) for l in r.stderr.splitlines()
                 if l.startswith("disk:   block=")]
        self.assertTrue(named, r.stderr)
        self.assertEqual([b for b in named if b % 64], [], r.stderr)


if __name__ == "__main__":
    gwtest.require_kvm()
    unittest.main()
