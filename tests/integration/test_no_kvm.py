#!/usr/bin/env python3
"""A host without KVM: godwit-vm says so in one clear line and exits 4. Runs everywhere
(it points godwit-vm at a device path that does not exist)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

VM = gwtest.binary("godwit-vm")


class NoKvm(unittest.TestCase):
    def test_missing_device(self):
        r = gwtest.run([VM, "run", "--memory", "64M", "--seconds", "1"],
                       env={"GODWIT_KVM_DEVICE": "/nonexistent/kvm"})
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("KVM is not available on this host", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)

    def test_not_a_kvm_device(self):
        r = gwtest.run([VM, "run", "--memory", "64M", "--seconds", "1"],
                       env={"GODWIT_KVM_DEVICE": "/dev/null"})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("KVM API version", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
