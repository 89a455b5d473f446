"""Shared helpers for Godwit's integration tests: locating binaries, running godwit-vm,
parsing its one-line JSON, and skipping (exit 77, which ctest reports as skipped) when the
host has no usable /dev/kvm."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

SKIP = 77


def kvm_usable():
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
        return True
    except OSError:
        return False


def require_kvm():
    if not kvm_usable():
        print("SKIP: /dev/kvm is not usable on this host")
        sys.exit(SKIP)


def no_vm(test):
    """Marks a test that starts no VM (refusals of hostile input, usage errors, the CLI's own
    checks). Where /dev/kvm is not usable it still runs; its suite's other tests do not
    (run_tests)."""
    test.gw_no_vm = True
    return test


class _NoVmLoader(unittest.TestLoader):
    """Loads only the tests marked @no_vm: a class without one is not even set up."""

    def getTestCaseNames(self, test_case_class):
        return [n for n in super().getTestCaseNames(test_case_class)
                if getattr(getattr(test_case_class, n), "gw_no_vm", False)]


def run_tests(argv=None):
    """unittest.main for a suite: 0, 1 on a failure, or SKIP (77) when no test ran or every
    test skipped. Without a usable /dev/kvm only the tests marked @no_vm run: a missing
    capability skips what needs it, not the checks that need none."""
    kvm = kvm_usable()
    if not kvm:
        print("/dev/kvm is not usable on this host: only the tests that start no VM run")
    r = unittest.main(argv=argv, exit=False, verbosity=2,
                      testLoader=unittest.TestLoader() if kvm else _NoVmLoader()).result
    if not r.wasSuccessful():
        return 1
    if not r.testsRun or len(r.skipped) == r.testsRun:
        print("SKIP: no test ran%s" % ("" if kvm else " (/dev/kvm is not usable on this host)"))
        return SKIP
    return 0


def binary(name, argv_index=1):
    """The binary named on the command line, or in GODWIT_<NAME>, or in ./build."""
    env = "GODWIT_" + name.upper().replace("-", "_").replace("GODWIT_", "")
    if len(sys.argv) > argv_index and os.path.exists(sys.argv[argv_index]):
        path = sys.argv.pop(argv_index)
        return os.path.abspath(path)
    if os.environ.get(env):
        return os.environ[env]
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "build", name)


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError("no JSON line in output:\n" + text)


def run(cmd, timeout=120, env=None):
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)


def wait_for_path(path, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


class Runner:
    """A godwit-vm process in the background with a control socket."""

    def __init__(self, vm_bin, args, workdir):
        self.sock = os.path.join(workdir, "vm-%d.sock" % id(self))
        self.proc = subprocess.Popen([vm_bin] + args + ["--control", self.sock, "--json"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if not wait_for_path(self.sock):
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError("runner did not open its control socket:\n" + err)

    def finish(self, timeout=60):
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
