#!/usr/bin/python3
"""Restores through godwitd, timed from the API: one backup of a running dirtier (and of a disk
guest), restored the ordinary way and instantly, in the same run on the same backup.

    flock /tmp/godwit-heavy.lock /usr/bin/python3 tests/daemon/measure_restore_api.py [BUILD_DIR]
          [--memory-mib N] [--ws-mib N]

Prints one JSON line: for the ordinary restore the job's time from the RestoreBackup call to
SUCCEEDED (the VM answering) and its throughput; for the instant restore the time from the call
to the job's "the VM runs" event (GetVm RUNNING, the guest running) and to the end of the fill;
`ready_ratio_vs_ordinary` = instant ready time / ordinary restore time (the baseline, measured
here). Both restored VMs are stopped and checked: memory digest equal, 0 guest verify errors.
Exits 77 without /dev/kvm or python3-grpcio."""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwd  # noqa: E402
from gwd import AUTH, wait_for  # noqa: E402

api, api_grpc, hpb, hgrpc = gwd.stubs()
bk, bk_grpc = gwd.backup_stubs()
FINAL = (api.Job.SUCCEEDED, api.Job.FAILED, api.Job.CANCELLED)


def summary(d, name):
    with open(os.path.join(d.dir, "state", "vms", name, "runner.out")) as f:
        return json.loads([l for l in f.read().splitlines() if l.startswith("{")][-1])


def restore(d, b, name, instant):
    t0 = time.monotonic()
    j = b.RestoreBackup(bk.RestoreBackupRequest(target="local", vm="src", name=name, instant=instant),
                        metadata=AUTH, timeout=60).job
    ready_ms = None
    last = None
    for e in d.stub.WatchJob(api.WatchJobRequest(id=j.id), metadata=AUTH, timeout=600):
        if ready_ms is None and e.message.startswith("the VM runs"):
            ready_ms = (time.monotonic() - t0) * 1000
        last = e.job
    done_ms = (time.monotonic() - t0) * 1000
    if last.state != api.Job.SUCCEEDED:
        raise SystemExit("restore %s: %s" % (name, last.error))
    d.stub.StopVm(api.StopVmRequest(name=name), metadata=AUTH, timeout=60)
    return ready_ms, done_ms, last, summary(d, name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default=gwd.build_dir())
    ap.add_argument("--memory-mib", type=int, default=512)
    ap.add_argument("--ws-mib", type=int, default=384)
    a = ap.parse_args()
    gwd.require_kvm()
    tmp = tempfile.mkdtemp(prefix="gw-measure-restore-")
    d = None
    try:
        d = gwd.Daemon(os.path.abspath(a.build), "host-m",
                       extra="[backup_target local]\nstore = dir:%s\n" % os.path.join(tmp, "store"))
        b = bk_grpc.GodwitBackupStub(d.channel)
        ws = a.ws_mib << 20
        d.stub.CreateVm(api.CreateVmRequest(name="src", memory_bytes=a.memory_mib << 20, vcpus=1, start=True,
                                            guest="dirtier:ws=%dM,rate=8M,pattern=random" % a.ws_mib),
                        metadata=AUTH, timeout=60)
        if not wait_for(lambda: d.stub.GetVm(api.GetVmRequest(name="src"), metadata=AUTH).vm.counters.pages_written
                        >= ws >> 12, 300):
            raise SystemExit("the guest did not write its working set")
        j = b.CreateBackup(bk.CreateBackupRequest(vm="src", target="local"), metadata=AUTH, timeout=60).job
        bj = wait_for(lambda: (lambda x: x if x.state in FINAL else None)(
            d.stub.GetJob(api.GetJobRequest(id=j.id), metadata=AUTH).job), 600, 0.2)
        if bj.state != api.Job.SUCCEEDED:
            raise SystemExit("backup: " + bj.error)
        digest = bj.backup.memory_digest
        _, ord_ms, oj, os_ = restore(d, b, "ordinary", False)
        ready_ms, fill_ms, ij, is_ = restore(d, b, "instant", True)
        out = {
            "memory_mib": a.memory_mib, "ws_mib": a.ws_mib,
            "ordinary_restore_ms": round(ord_ms, 1),
            "ordinary_job_throughput_mib_s": round(oj.progress.throughput_bytes_per_s / 1048576.0, 1),
            "ordinary_chunks": oj.progress.backup_chunks,
            "instant_ready_ms": round(ready_ms, 1) if ready_ms is not None else None,
            "instant_job_done_ms": round(fill_ms, 1),
            "instant_fill_ms": is_.get("instant_fill_ms"),
            "instant_fill_mib_s": is_.get("instant_fill_mib_s"),
            "ready_ratio_vs_ordinary": round(ready_ms / ord_ms, 3) if ready_ms is not None and ord_ms else None,
            "memory_digest_equal": os_["memory_digest"] == digest and is_["instant_memory_digest"] == digest,
            "guest_verify_errors": os_["guest_verify_errors"] + is_["guest_verify_errors"],
        }
        print(json.dumps(out))
        return 0 if out["memory_digest_equal"] and out["guest_verify_errors"] == 0 else 1
    finally:
        if d:
            d.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
