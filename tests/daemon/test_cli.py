#!/usr/bin/python3
"""The godwit CLI against a real godwitd: every command, tables and --json, exit codes,
--help everywhere, and where the address and token come from (flags, environment, config
file).

    /usr/bin/python3 tests/daemon/test_cli.py [BUILD_DIR] [-k NAME]"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwd  # noqa: E402

BIN = gwd.build_dir()


class CliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = gwd.Daemon(BIN, "cli-host", extra="peers = 127.0.0.1:1\n")
        cls.tokfile = os.path.join(cls.d.dir, "token")

    @classmethod
    def tearDownClass(cls):
        cls.d.cleanup()

    def run_cli(self, *args, env=None, auth=True):
        e = {k: v for k, v in os.environ.items() if not k.startswith("GODWIT_")}
        e["HOME"] = self.d.dir   # no stray ~/.config/godwit/godwit.conf
        if env:
            e.update(env)
        cmd = [os.path.join(BIN, "godwit")]
        if auth:
            cmd += ["--addr", self.d.addr, "--token-file", self.tokfile]
        p = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60, env=e)
        return p.returncode, p.stdout, p.stderr

    def ok(self, *args, **kw):
        rc, out, err = self.run_cli(*args, **kw)
        self.assertEqual(rc, 0, "godwit %s: rc %d\n%s%s" % (" ".join(args), rc, out, err))
        return out

    def js(self, *args):
        return json.loads(self.ok(*args, "--json").strip().splitlines()[-1])

    def test_vm_commands(self):
        out = self.ok("vm", "create", "c1", "--memory", "64M", "--guest", "idle:ws=4M", "--restart", "on-crash",
                      "--max-restarts", "3", "--backoff-ms", "50")
        self.assertIn("state:         defined", out)
        vm = self.js("vm", "show", "c1")["vm"]
        self.assertEqual(vm["state"], "DEFINED")
        self.assertEqual(vm["memory_bytes"], 64 << 20)
        self.assertEqual(vm["restart_policy"]["kind"], "ON_CRASH")
        self.assertIn("c1: running", self.ok("vm", "start", "c1"))
        table = self.ok("vm", "list")
        self.assertTrue(table.startswith("NAME"))
        row = [l for l in table.splitlines() if l.startswith("c1 ")][0]
        self.assertIn("running", row)
        self.assertIn("64 MiB", row)
        vms = self.js("vm", "list", "--state", "running")["vms"]
        self.assertIn("c1", [v["name"] for v in vms])
        self.assertEqual(self.js("vm", "list", "--state", "stopped")["vms"], [])
        host = self.js("host")
        self.assertEqual(host["hostname"], "cli-host")
        self.assertIn("running jobs:", self.ok("host"))
        # Conflicts and misses have their own exit codes.
        self.assertEqual(self.run_cli("vm", "create", "c1")[0], 4)
        self.assertEqual(self.run_cli("vm", "start", "c1")[0], 4)
        self.assertEqual(self.run_cli("vm", "delete", "c1")[0], 4)
        self.assertEqual(self.run_cli("vm", "show", "nope")[0], 3)
        rc, _, err = self.run_cli("vm", "create", "bad name")
        self.assertEqual(rc, 2)
        self.assertIn("INVALID_ARGUMENT", err)
        self.assertIn("c1: stopped", self.ok("vm", "stop", "c1"))
        self.assertEqual(self.run_cli("vm", "stop", "c1")[0], 4)
        self.ok("vm", "start", "c1")
        self.assertEqual(self.js("vm", "delete", "c1", "--force"), {"deleted": "c1"})
        self.assertEqual(self.run_cli("vm", "show", "c1")[0], 3)
        # resolve: exactly one side; only a VM in doubt (FAILED_PRECONDITION otherwise).
        self.assertEqual(self.run_cli("vm", "resolve", "c2")[0], 2)
        self.assertEqual(self.run_cli("vm", "resolve", "c2", "--keep-source", "--keep-destination")[0], 2)
        self.assertEqual(self.run_cli("vm", "resolve", "nope", "--keep-source")[0], 3)
        self.ok("vm", "create", "c2", "--memory", "64M", "--guest", "idle:ws=4M")
        rc, _, err = self.run_cli("vm", "resolve", "c2", "--keep-destination")
        self.assertEqual(rc, 4)
        self.assertIn("not in doubt", err)
        # A shape the runner would refuse is refused at create, with the runner's reason.
        rc, _, err = self.run_cli("vm", "create", "c3", "--vcpus", "17")
        self.assertEqual(rc, 2)
        self.assertIn("vcpus must be between 1 and 16", err)
        self.ok("vm", "delete", "c2")

    def test_jobs_and_migrate(self):
        self.ok("vm", "create", "j1", "--memory", "64M", "--guest", "idle:ws=4M", "--start")
        # An unreachable destination: the job fails and --wait says so with exit 1.
        rc, out, err = self.run_cli("migrate", "j1", "--to", "127.0.0.1:1", "--wait")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("failed", out)
        jobs = self.js("job", "list", "--vm", "j1")["jobs"]
        self.assertEqual(len(jobs), 1)
        jid = jobs[0]["id"]
        self.assertEqual(jobs[0]["state"], "FAILED")
        self.assertIn(jid, self.ok("job", "list"))
        self.assertIn("state:         failed", self.ok("job", "show", jid))
        self.assertEqual(self.js("job", "show", jid)["job"]["vm"], "j1")
        # watch of a finished job: its final state, exit 1 (failed); --json gives events.
        rc, out, _ = self.run_cli("job", "watch", jid)
        self.assertEqual(rc, 1)
        self.assertIn("failed", out)
        rc, out, _ = self.run_cli("job", "watch", jid, "--json")
        self.assertEqual(json.loads(out.splitlines()[0])["job"]["state"], "FAILED")
        self.assertEqual(self.run_cli("job", "cancel", jid)[0], 4)
        self.assertEqual(self.run_cli("job", "show", "job-nope")[0], 3)
        # Without --wait: the job id at once.
        out = self.js("migrate", "j1", "--to", "127.0.0.1:1")
        self.assertTrue(out["job"]["id"].startswith("job-"))
        self.assertEqual(self.run_cli("migrate", "j1")[0], 2)                # no --to
        self.assertEqual(self.run_cli("migrate", "j1", "--to", "x:1", "--mode", "sideways")[0], 2)
        self.ok("vm", "delete", "j1", "--force")

    @gwd.no_vm
    def test_help_everywhere(self):
        for args in (["--help"], ["vm", "--help"], ["vm", "create", "--help"], ["vm", "list", "--help"],
                     ["vm", "stop", "--help"], ["job", "--help"], ["job", "list", "--help"],
                     ["job", "watch", "--help"], ["migrate", "--help"], ["host", "--help"]):
            rc, out, _ = self.run_cli(*args, auth=False)
            self.assertEqual(rc, 0, args)
            self.assertIn("usage:", out)
        self.assertEqual(self.run_cli(auth=False)[0], 2)
        self.assertEqual(self.run_cli("frobnicate", auth=False)[0], 2)
        self.assertEqual(self.run_cli("vm", "explode", auth=False)[0], 2)
        self.assertIn("exit status", self.run_cli("--help", auth=False)[1])

    @gwd.no_vm
    def test_address_and_token_sources(self):
        # No token: exit 5 with a hint.
        rc, _, err = self.run_cli("--addr", self.d.addr, "vm", "list", auth=False)
        self.assertEqual(rc, 5)
        self.assertIn("UNAUTHENTICATED", err)
        # Environment.
        rc, out, _ = self.run_cli("vm", "list", auth=False, env={"GODWIT_ADDR": self.d.addr, "GODWIT_TOKEN": gwd.TOKEN})
        self.assertEqual(rc, 0)
        rc, _, _ = self.run_cli("vm", "list", auth=False,
                                env={"GODWIT_ADDR": self.d.addr, "GODWIT_TOKEN_FILE": self.tokfile})
        self.assertEqual(rc, 0)
        # Config file, overridden by the flag.
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
            f.write("[client]\naddr = %s\ntoken_file = %s\n" % (self.d.addr, self.tokfile))
        try:
            self.assertEqual(self.run_cli("--config", f.name, "host", auth=False)[0], 0)
            self.assertEqual(self.run_cli("host", auth=False, env={"GODWIT_CONFIG": f.name})[0], 0)
            self.assertEqual(self.run_cli("--config", f.name, "--token", "wrong", "host", auth=False)[0], 5)
        finally:
            os.unlink(f.name)
        # Nobody listening: exit 6.
        rc, _, err = self.run_cli("--addr", "127.0.0.1:%d" % gwd.free_port(), "--token", "x", "host", auth=False)
        self.assertEqual(rc, 6)
        self.assertIn("cannot reach", err)


def main():
    global BIN
    if len(sys.argv) > 1 and os.path.isdir(sys.argv[1]):
        BIN = os.path.abspath(sys.argv.pop(1))
    for b in ("godwitd", "godwit", "godwit-vm"):
        if not os.access(os.path.join(BIN, b), os.X_OK):
            print("SKIP: %s not built in %s" % (b, BIN))
            return gwd.SKIP
    return gwd.run_tests()


if __name__ == "__main__":
    sys.exit(main())
