"""Helpers for the control-plane tests: gRPC stubs generated from proto/ at test time, and
godwitd instances in temporary state directories on free loopback ports.

Run with Debian's /usr/bin/python3 (python3-grpcio, python3-grpc-tools); tests exit 77
(skipped) when those are missing. Without a usable /dev/kvm a suite runs only its tests marked
@no_vm (run_tests), and exits 77 when it has none."""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOKEN = "test-token-0123456789"
SECRET = "cluster-secret-for-tests-0123456789abcdef"

# The KVM check and skip code are the integration tests' own (tests/integration/gwtest.py).
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from gwtest import SKIP, kvm_usable, no_vm, require_kvm, run_tests  # noqa: E402,F401

try:
    import grpc
    from grpc_tools import protoc
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(SKIP)


_STUBS = None


def stubs():
    """(api_pb2, api_pb2_grpc, health_pb2, health_pb2_grpc), generated once per process."""
    global _STUBS
    if _STUBS:
        return _STUBS
    out = tempfile.mkdtemp(prefix="gw-stubs-")
    atexit.register(shutil.rmtree, out, True)
    shutil.copy(os.path.join(ROOT, "proto/grpc/health/v1/health.proto"), out)
    rc = protoc.main(["protoc", "-I" + os.path.join(ROOT, "proto"), "-I" + out, "--python_out=" + out,
                      "--grpc_python_out=" + out, "godwit/v1/api.proto", "godwit/v1/daemon.proto", "godwit/v1/backup_api.proto",
                      "health.proto"])
    if rc != 0:
        raise RuntimeError("protoc failed")
    sys.path.insert(0, out)
    from godwit.v1 import api_pb2, api_pb2_grpc  # noqa: E402
    import health_pb2, health_pb2_grpc  # noqa: E402
    _STUBS = (api_pb2, api_pb2_grpc, health_pb2, health_pb2_grpc)
    return _STUBS


def peer_stubs():
    """(daemon_pb2, daemon_pb2_grpc): the peers' service GodwitPeer."""
    stubs()
    from godwit.v1 import daemon_pb2, daemon_pb2_grpc  # noqa: E402
    return daemon_pb2, daemon_pb2_grpc


def backup_stubs():
    """(backup_api_pb2, backup_api_pb2_grpc): the service GodwitBackup."""
    stubs()
    from godwit.v1 import backup_api_pb2, backup_api_pb2_grpc  # noqa: E402
    return backup_api_pb2, backup_api_pb2_grpc


def peer_token(secret=SECRET):
    """The peers' bearer token a daemon derives from the cluster secret (HKDF-SHA256)."""
    import hashlib
    import hmac
    prk = hmac.new(b"godwit-peer-api-v1", secret.encode(), hashlib.sha256).digest()
    return hmac.new(prk, b"bearer\x01", hashlib.sha256).hexdigest()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def build_dir():
    return os.path.abspath(os.environ.get("GODWIT_BUILD", os.path.join(ROOT, "build")))


class Daemons(unittest.TestCase):
    """Base of suites that run several godwitd at once: setUpClass fills cls.ds and cls.tmp (a
    temporary directory); the base removes both, and call() finds a method on the Godwit or
    the GodwitBackup service of one of them."""
    ds = []
    tmp = None

    @classmethod
    def tearDownClass(cls):
        for d in cls.ds:
            d.cleanup()
        if cls.tmp:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def call(self, d, method, req, timeout=60):
        b = backup_stubs()[1].GodwitBackupStub(d.channel)
        stub = b if hasattr(b, method) else d.stub
        return getattr(stub, method)(req, metadata=AUTH, timeout=timeout)


def run_suite(module_globals, binaries=("godwitd", "godwit-vm")):
    """The main of a daemon suite: an optional BUILD_DIR first argument becomes the module's
    BIN; a missing binary exits SKIP (77); then run_tests."""
    if len(sys.argv) > 1 and os.path.isdir(sys.argv[1]):
        module_globals["BIN"] = os.path.abspath(sys.argv.pop(1))
    bindir = module_globals["BIN"]
    for b in binaries:
        if not os.access(os.path.join(bindir, b), os.X_OK):
            print("SKIP: %s not built in %s" % (b, bindir))
            return SKIP
    return run_tests()


class Daemon:
    """One godwitd with its own state dir, token and cluster secret."""

    def __init__(self, bindir, name="host-a", extra="", port=None):
        self.bindir = bindir
        self.dir = tempfile.mkdtemp(prefix="gwd-")
        self.port = port or free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.name = name
        with open(os.path.join(self.dir, "token"), "w") as f:
            f.write(TOKEN + "\n")
        with open(os.path.join(self.dir, "secret"), "w") as f:
            f.write(SECRET + "\n")
        self.conf = os.path.join(self.dir, "godwitd.conf")
        with open(self.conf, "w") as f:
            f.write("[daemon]\nlisten = %s\nstate_dir = state\ntoken_file = token\nsecret_file = secret\n"
                    "runner = %s\nhostname = %s\n%s" % (self.addr, os.path.join(bindir, "godwit-vm"), name, extra))
        self.proc = None
        self.start()

    def start(self):
        self.log = open(os.path.join(self.dir, "godwitd.log"), "a")
        self.proc = subprocess.Popen([os.path.join(self.bindir, "godwitd"), "--config", self.conf],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on"):
            self.proc.wait(timeout=5)
            raise AssertionError("godwitd did not start (%r):\n%s" % (line, self.logtext()))
        self.channel = grpc.insecure_channel(self.addr)
        api_pb2, api_grpc, hpb, hgrpc = stubs()
        self.stub = api_grpc.GodwitStub(self.channel)
        self.health = hgrpc.HealthStub(self.channel)

    def logtext(self):
        with open(os.path.join(self.dir, "godwitd.log")) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                rc = self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
                raise AssertionError("godwitd did not stop on signal %d" % sig)
            self.proc.stdout.close()
            self.log.close()
            self.channel.close()
            return rc
        return None

    def restart(self):
        self.stop()
        self.start()

    def runner_pids(self):
        """Pids of godwit-vm processes whose control socket lives in our state dir."""
        pids = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % p, "rb") as f:
                    cmd = f.read().decode(errors="replace")
            except OSError:
                continue
            if "godwit-vm" in cmd and self.dir in cmd:
                pids.append(int(p))
        return pids

    def vm_runners(self, name):
        """Pids of the live runners of VM name (its control socket in our state dir)."""
        out = []
        for pid in self.runner_pids():
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if any(a.endswith("/%s/control.sock" % name) for a in argv) and pid_alive(pid):
                out.append(pid)
        return out

    def sanitizer_reports(self):
        text = self.logtext()
        return [l for l in text.splitlines()
                if "AddressSanitizer" in l or "LeakSanitizer" in l or "ThreadSanitizer" in l
                or "runtime error:" in l]

    def cleanup(self):
        """Stops the daemon, kills the runners it left (they outlive it by design), and
        fails when the daemon did not exit cleanly or a sanitizer reported anything."""
        rc = self.stop()
        problems = self.sanitizer_reports()
        for pid in self.runner_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if rc not in (0, None) or problems:
            raise AssertionError("godwitd exited with %s; log in %s:\n%s" % (rc, self.dir, "\n".join(problems)))
        if not os.environ.get("GODWIT_KEEP_TEST_DIRS"):     # a developer reading a failure's logs
            shutil.rmtree(self.dir, ignore_errors=True)


AUTH = (("authorization", "Bearer " + TOKEN),)


def code_of(fn):
    """(status code, details) of calling fn: OK and "" when it raised no RPC error."""
    try:
        fn()
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def wait_for(fn, timeout=10.0, step=0.05):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = fn()
        if last:
            return last
        time.sleep(step)
    return last


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
