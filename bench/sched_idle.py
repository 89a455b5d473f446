#!/usr/bin/python3
"""How much CPU an idle godwitd spends on its backup scheduler: one daemon with a directory
backup target gets N policies (nightly, Europe/Berlin, none due), then its CPU time is read
from /proc over --seconds. The baseline, in the same run, is the same daemon with one policy.

Usage: /usr/bin/python3 bench/sched_idle.py [BUILD_DIR] [--policies N] [--seconds S]
Prints one JSON object: cpu_fraction with 1 and with N policies, and their ratio."""
import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "daemon"))
import gwd  # noqa: E402
from gwd import AUTH  # noqa: E402


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def measure(build, n, seconds):
    tmp = tempfile.mkdtemp(prefix="gw-sched-bench-")
    d = gwd.Daemon(build, "sched", extra="[backup_target w]\nstore = dir:%s\n" % os.path.join(tmp, "bk"))
    try:
        bk, bk_grpc = gwd.backup_stubs()
        stub = bk_grpc.GodwitBackupStub(d.channel)
        for i in range(n):
            stub.SetBackupPolicy(bk.SetBackupPolicyRequest(policy=bk.BackupPolicy(
                vm="vm%05d" % i, schedule="0 2 * * *", tz="Europe/Berlin", target="w", keep_daily=7)),
                metadata=AUTH, timeout=30)
        time.sleep(1)
        c0, w0 = cpu_seconds(d.proc.pid), time.monotonic()
        time.sleep(seconds)
        c1, w1 = cpu_seconds(d.proc.pid), time.monotonic()
        return (c1 - c0) / (w1 - w0)
    finally:
        d.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--policies", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    one = measure(build, 1, a.seconds)
    many = measure(build, a.policies, a.seconds)
    print(json.dumps({"policies": a.policies, "seconds": a.seconds, "cpu_fraction_1": round(one, 4),
                      "cpu_fraction_n": round(many, 4), "ratio_n_to_1": round(many / one, 1) if one > 0 else None}))


if __name__ == "__main__":
    sys.exit(main())
