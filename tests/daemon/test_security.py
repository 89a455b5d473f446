#!/usr/bin/env python3
"""The migration channel between two godwitd hosts, as an attacker on the network sees it.

- 200 idle strangers hold connections to the destination's migration port while a real
  migration to it succeeds (they once made it fail after 60 s).
- A reservation's session token: a stream with a forged token is closed at once, starts no
  runner and leaves the reservation in place (a stranger connecting first cannot cancel it).
- An incoming VM's disk must be a canonical path inside the destination's image_roots.
- The peers' API takes the cluster credential only: the operator's token does not open it,
  and the peers' credential does not open the operator's API.

Run with Debian's /usr/bin/python3 (python3-grpcio, python3-grpc-tools)."""
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwd  # noqa: E402
from gwd import AUTH, grpc  # noqa: E402

BIN = gwd.build_dir() if len(sys.argv) < 2 else os.path.abspath(sys.argv.pop(1))
api = gwd.stubs()[0]
peer_pb, peer_grpc = gwd.peer_stubs()
PEER_AUTH = (("authorization", "Bearer " + gwd.peer_token()),)


def preamble(stream, nstreams, token, tls=1):
    return b"GWPR" + struct.pack("<BBHHHI", 1, tls, 0, stream, nstreams, 0) + token


def closed_within(s, limit):
    """Seconds until the peer closed s (recv gives b"" or a reset), or None after limit."""
    s.settimeout(limit)
    t0 = time.monotonic()
    try:
        if s.recv(10) != b"":
            return None
    except ConnectionResetError:
        pass
    except socket.timeout:
        return None
    return time.monotonic() - t0


class Security(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        a_port, b_port = gwd.free_port(), gwd.free_port()
        cls.mport = gwd.free_port()
        cls.tmp = tempfile.mkdtemp(prefix="gw-sec-")
        cls.images = os.path.join(cls.tmp, "images")
        os.mkdir(cls.images)
        cls.a = gwd.Daemon(BIN, "host-a", port=a_port, extra="peers = 127.0.0.1:%d\n" % b_port)
        cls.b = gwd.Daemon(BIN, "host-b", port=b_port,
                           extra="migration_port = %d\npeers = 127.0.0.1:%d\nimage_roots = %s\n"
                           % (cls.mport, a_port, cls.images))
        cls.peer = peer_grpc.GodwitPeerStub(cls.b.channel)

    @classmethod
    def tearDownClass(cls):
        for d in (cls.a, cls.b):
            d.cleanup()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def create(self, d, name, guest="idle:ws=8M"):
        d.stub.CreateVm(api.CreateVmRequest(name=name, memory_bytes=64 << 20, vcpus=1, guest=guest, start=True),
                        metadata=AUTH, timeout=60)

    def prepare(self, name, disk="", source="test"):
        vm = api.Vm(name=name, memory_bytes=64 << 20, vcpus=1, guest="idle:ws=8M", disk_path=disk)
        return self.peer.PrepareIncoming(peer_pb.PrepareIncomingRequest(vm=vm, job_id="job-test", source_host=source,
                                                                        streams=1), metadata=PEER_AUTH, timeout=10)

    @gwd.no_vm
    def test_a_stranger_cannot_define_a_listeners_session(self):
        """A per-migration listener (no migration port): a stranger's preamble that arrives
        first must not become the session and shut the real source's streams out. With the
        daemon's token file the runner takes only streams carrying it; without one (by hand)
        the first preamble still decides, which this shows too."""
        token = os.urandom(32)
        secret = os.path.join(self.tmp, "runner-secret")
        with open(secret, "w") as f:
            f.write(os.urandom(48).hex() + "\n")

        def source_kept(with_token):
            args = [os.path.join(BIN, "godwit-vm"), "incoming", "--listen", "tcp:127.0.0.1:0",
                    "--secret-file", secret, "--json"]
            tf = os.path.join(self.tmp, "incoming.token")
            if with_token:
                with open(tf, "w") as f:
                    f.write(token.hex() + "\n")
                args += ["--token-file", tf]
            p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                line = p.stdout.readline()
                if not line:
                    p.wait(timeout=5)
                    self.fail("the runner did not listen: " + p.stderr.read())
                url = json.loads(line)["listening"]
                port = int(url.rsplit(":", 1)[1])
                if with_token:
                    self.assertFalse(os.path.exists(tf))   # read once, then gone
                stranger = socket.create_connection(("127.0.0.1", port), timeout=5)
                stranger.sendall(preamble(0, 2, os.urandom(32)))
                time.sleep(0.3)
                src = socket.create_connection(("127.0.0.1", port), timeout=5)
                src.sendall(preamble(0, 1, token))
                kept = closed_within(src, 1.5) is None
                stranger.close()
                src.close()
                return kept
            finally:
                p.kill()
                p.wait()

        self.assertTrue(source_kept(True), "the source's stream was shut out by a stranger's")
        self.assertFalse(source_kept(False))

    @gwd.no_vm
    def test_a_partial_preamble_does_not_spin_the_port(self):
        """A stranger that sends the first bytes of a preamble and stops: the migration port's
        thread waits for more bytes instead of peeking again at once until the connection's
        2 s timeout (it spun a core doing so)."""
        def cpu_s():
            with open("/proc/%d/stat" % self.b.proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        s = socket.create_connection(("127.0.0.1", self.mport), timeout=5)
        try:
            before = cpu_s()
            s.sendall(b"GWPR")
            time.sleep(1.5)
            used = cpu_s() - before
        finally:
            s.close()
        self.assertLess(used, 0.3, "godwitd used %.2f s of CPU in 1.5 s" % used)

    @gwd.no_vm
    def test_zero_grpc_timeout_is_already_past(self):
        """grpc-timeout "0n" is a deadline already past, not "none": an open health Watch
        (no token needed) with it ends at once, one without a timeout stays open; and a
        deadline ends a stream whose client keeps its window shut."""
        def lit(name, value):   # HPACK: literal header field without indexing, new name, no Huffman
            return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value

        def frame(ftype, flags, sid, payload):
            return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload

        def ends_soon(timeout_header, shut_window=False, within=2):
            host, port = self.a.addr.rsplit(":", 1)
            s = socket.create_connection((host, int(port)), timeout=5)
            try:
                hdrs = (lit(b":method", b"POST") + lit(b":scheme", b"http") + lit(b":path", b"/grpc.health.v1.Health/Watch")
                        + lit(b":authority", b"x") + lit(b"content-type", b"application/grpc") + lit(b"te", b"trailers"))
                if timeout_header:
                    hdrs += lit(b"grpc-timeout", timeout_header)
                settings = struct.pack(">HI", 4, 0) if shut_window else b""   # SETTINGS_INITIAL_WINDOW_SIZE 0
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, settings) + frame(1, 4, 1, hdrs)
                          + frame(0, 1, 1, b"\x00\x00\x00\x00\x00"))
                buf, t0 = b"", time.monotonic()
                s.settimeout(0.2)
                while time.monotonic() - t0 < within:
                    try:
                        chunk = s.recv(65536)
                    except socket.timeout:
                        continue
                    if not chunk:
                        return True
                    buf += chunk
                    off = 0
                    while len(buf) - off >= 9:   # frames: HEADERS with END_STREAM, or RST_STREAM, on stream 1
                        ln = int.from_bytes(buf[off:off + 3], "big")
                        ftype, flags, sid = buf[off + 3], buf[off + 4], int.from_bytes(buf[off + 5:off + 9], "big") & 0x7FFFFFFF
                        if len(buf) - off < 9 + ln:
                            break
                        if sid == 1 and ((ftype == 1 and flags & 1) or ftype == 3):
                            return True
                        off += 9 + ln
                return False
            finally:
                s.close()

        self.assertTrue(ends_soon(b"0n"))
        self.assertTrue(ends_soon(b"0S"))
        self.assertFalse(ends_soon(None))
        # A client that keeps its window shut: the Watch's first message stays queued, and at
        # the deadline the stream is reset (its output dropped), not kept until the
        # connection ends.
        self.assertTrue(ends_soon(b"1S", shut_window=True, within=4))

    @gwd.no_vm
    def test_the_same_source_asking_again_replaces_its_reservation(self):
        # A source daemon killed between PrepareIncoming and its streams restarts and retries
        # (an evacuation resumes): its new request replaces the reservation no stream reached,
        # and the old token is dead. Another host asking for the same name is refused.
        first = self.prepare("again")
        self.assertTrue(first.tls_aes128)   # our runners take the faster suite with the PSK
        try:
            second = self.prepare("again")
            self.assertNotEqual(first.session_token, second.session_token)
            self.assertIn("test asks again; dropping its earlier reservation", self.b.logtext())
            s = socket.create_connection(("127.0.0.1", self.mport), timeout=5)
            s.sendall(preamble(0, 1, bytes(first.session_token)))
            t = closed_within(s, 5)
            s.close()
            self.assertIsNotNone(t, "the replaced reservation's token was still taken")
            with self.assertRaises(grpc.RpcError) as cm:
                self.prepare("again", source="someone-else")
            self.assertEqual(cm.exception.code(), grpc.StatusCode.ALREADY_EXISTS)
            got = self.b.stub.GetVm(api.GetVmRequest(name="again"), metadata=AUTH, timeout=10).vm
            self.assertEqual(got.state, api.Vm.MIGRATING)
        finally:
            self.peer.AbortIncoming(peer_pb.AbortIncomingRequest(vm="again", job_id="job-test"),
                                    metadata=PEER_AUTH, timeout=10)
        # A source name too long to record is not recorded cut short (a cut name could be
        # another host's): its reservation is never replaced, by that source or any other.
        long_name = "h" * 300
        self.prepare("again-long", source=long_name)
        try:
            for source in (long_name, long_name[:63], long_name[:255]):
                with self.assertRaises(grpc.RpcError) as cm:
                    self.prepare("again-long", source=source)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.ALREADY_EXISTS, len(source))
        finally:
            self.peer.AbortIncoming(peer_pb.AbortIncomingRequest(vm="again-long", job_id="job-test"),
                                    metadata=PEER_AUTH, timeout=10)

    @gwd.no_vm
    def test_peer_api_takes_the_cluster_credential_only(self):
        vm = api.Vm(name="nobody", memory_bytes=64 << 20, vcpus=1, guest="idle:ws=8M")
        req = peer_pb.PrepareIncomingRequest(vm=vm, job_id="j", source_host="x", streams=1)
        for md in (AUTH, (("authorization", "Bearer wrong"),), ()):
            with self.assertRaises(grpc.RpcError) as cm:
                self.peer.PrepareIncoming(req, metadata=md, timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        with self.assertRaises(grpc.RpcError) as cm:
            self.b.stub.ListVms(api.ListVmsRequest(), metadata=PEER_AUTH, timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)

    @gwd.no_vm
    def test_forged_session_token(self):
        before = sorted(self.b.runner_pids())
        resp = self.prepare("reserved")
        self.assertEqual(len(resp.session_token), 32)
        self.assertTrue(resp.via_migration_port)
        try:
            forged = bytearray(resp.session_token)
            forged[0] ^= 1
            for payload in (preamble(0, 1, bytes(forged)), preamble(0, 1, os.urandom(32)),
                            preamble(0, 1, bytes(32))):
                s = socket.create_connection(("127.0.0.1", self.mport), timeout=5)
                s.sendall(payload)
                t = closed_within(s, 5)
                s.close()
                self.assertIsNotNone(t, "a forged token was not closed")
                self.assertLess(t, 1.5)
            # Nothing started; the reservation is still there for the real source.
            self.assertEqual(sorted(self.b.runner_pids()), before)
            got = self.b.stub.GetVm(api.GetVmRequest(name="reserved"), metadata=AUTH, timeout=10).vm
            self.assertEqual(got.state, api.Vm.MIGRATING)
            self.assertIn("a stream without a valid session token: closed", self.b.logtext())
        finally:
            self.peer.AbortIncoming(peer_pb.AbortIncomingRequest(vm="reserved", job_id="job-test"),
                                    metadata=PEER_AUTH, timeout=10)

    @gwd.no_vm
    def test_disk_path_outside_image_roots(self):
        outside = os.path.join(self.tmp, "outside.img")
        inside = os.path.join(self.images, "inside.img")
        link = os.path.join(self.images, "link.img")
        for path in (outside, inside):
            with open(path, "wb") as f:
                f.truncate(16 << 20)
        os.symlink(outside, link)
        for path, why in ((outside, "not inside this host's image_roots"),
                          (link, "symbolic link"),
                          (os.path.join(self.images, "..", "outside.img"), "symbolic link or is not canonical"),
                          (os.path.join(self.images, "missing.img"), "does not exist")):
            with self.assertRaises(grpc.RpcError) as cm:
                self.prepare("diskvm", disk=path)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION, path)
            self.assertIn(why, cm.exception.details())
            # CreateVm follows the same rule (before stop 29 it took a file disk from anywhere).
            with self.assertRaises(grpc.RpcError) as cm:
                self.b.stub.CreateVm(api.CreateVmRequest(name="diskvm", disk_path=path), metadata=AUTH, timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION, path)
            self.assertIn(why, cm.exception.details())
        defined = self.b.stub.CreateVm(api.CreateVmRequest(name="diskdef", disk_path=inside), metadata=AUTH, timeout=10)
        self.assertEqual(defined.vm.disk_path, inside)
        self.b.stub.DeleteVm(api.DeleteVmRequest(name="diskdef"), metadata=AUTH, timeout=10)
        with self.assertRaises(grpc.RpcError):
            self.b.stub.GetVm(api.GetVmRequest(name="diskvm"), metadata=AUTH, timeout=10)
        # Inside the roots: reserved (then given up).
        self.assertEqual(len(self.prepare("diskvm", disk=inside).session_token), 32)
        self.peer.AbortIncoming(peer_pb.AbortIncomingRequest(vm="diskvm", job_id="job-test"), metadata=PEER_AUTH,
                                timeout=10)

    @gwd.no_vm
    def test_a_peer_acts_only_on_its_own_migration(self):
        """Another peer (another job) can neither abort an arrival nor say its source is gone;
        an arriving VM never gets a disk another VM owns, nor a restart policy CreateVm would
        refuse; and a hand-over record left by an earlier VM of the name is cleared on arrival
        and on a new definition (it made the VM read as handed over: never started, and
        forgotten at its first exit)."""
        def abort(vm, job):
            return self.peer.AbortIncoming(peer_pb.AbortIncomingRequest(vm=vm, job_id=job), metadata=PEER_AUTH,
                                           timeout=10)

        def query(vm, job, gone):
            return self.peer.QueryIncoming(peer_pb.QueryIncomingRequest(vm=vm, job_id=job, source_gone=gone),
                                           metadata=PEER_AUTH, timeout=10).state

        arriving = peer_pb.QueryIncomingResponse.ARRIVING
        self.prepare("mine")
        self.assertEqual(gwd.code_of(lambda: abort("mine", "job-other"))[0], grpc.StatusCode.PERMISSION_DENIED)
        # Another job's question about the name: not its VM (and nothing is dropped).
        self.assertEqual(query("mine", "job-other", True), peer_pb.QueryIncomingResponse.ABSENT)
        self.assertEqual(query("mine", "job-test", False), arriving)
        self.assertEqual(gwd.code_of(lambda: abort("mine", "job-test"))[0], grpc.StatusCode.OK)
        self.assertEqual(query("mine", "job-test", False), peer_pb.QueryIncomingResponse.ABSENT)
        self.prepare("mine")
        self.assertEqual(query("mine", "job-test", True), peer_pb.QueryIncomingResponse.ABSENT)
        # A disk that belongs to a VM defined here.
        disk = os.path.join(self.images, "owned.img")
        with open(disk, "wb") as f:
            f.truncate(16 << 20)
        self.b.stub.CreateVm(api.CreateVmRequest(name="owner", disk_path=disk), metadata=AUTH, timeout=10)
        try:
            c, why = gwd.code_of(lambda: self.prepare("thief", disk=disk))
            self.assertEqual(c, grpc.StatusCode.FAILED_PRECONDITION, why)
            self.assertIn("belongs to VM owner", why)
            c, why = gwd.code_of(lambda: self.b.stub.CreateVm(api.CreateVmRequest(name="thief2", disk_path=disk),
                                                       metadata=AUTH, timeout=10))
            self.assertEqual(c, grpc.StatusCode.FAILED_PRECONDITION, why)
        finally:
            self.b.stub.DeleteVm(api.DeleteVmRequest(name="owner"), metadata=AUTH, timeout=10)
        # A restart policy CreateVm refuses.
        vm = api.Vm(name="odd", memory_bytes=64 << 20, vcpus=1, guest="idle:ws=8M",
                    restart_policy=api.RestartPolicy(kind=99))
        c, _ = gwd.code_of(lambda: self.peer.PrepareIncoming(peer_pb.PrepareIncomingRequest(
            vm=vm, job_id="job-test", source_host="test", streams=1), metadata=PEER_AUTH, timeout=10))
        self.assertEqual(c, grpc.StatusCode.INVALID_ARGUMENT)
        # Stale hand-over records go.
        for name, define in (("back", lambda: self.prepare("back")),
                             ("fresh", lambda: self.b.stub.CreateVm(api.CreateVmRequest(name="fresh"), metadata=AUTH,
                                                                    timeout=10))):
            vdir = os.path.join(self.b.dir, "state", "vms", name)
            os.makedirs(vdir, exist_ok=True)
            record = os.path.join(vdir, "handover.pb")
            with open(record, "wb") as f:
                f.write(b"stale")
            define()
            self.assertFalse(os.path.exists(record), name)
        abort("back", "job-test")
        self.b.stub.DeleteVm(api.DeleteVmRequest(name="fresh"), metadata=AUTH, timeout=10)

    @gwd.no_vm
    def test_api_without_token(self):
        """A TCP API without a token_file is refused at start (every local user reaches a port)
        unless api_no_token = on; a unix socket needs none and is made owner-only whatever the
        umask."""
        tmp = tempfile.mkdtemp(prefix="gw-notoken-", dir=self.tmp)

        def run(listen, extra=""):
            conf = os.path.join(tmp, "c.conf")
            with open(conf, "w") as f:
                f.write("[daemon]\nlisten = %s\nstate_dir = %s\nrunner = %s\nhostname = nt\n%s"
                        % (listen, os.path.join(tmp, "state"), os.path.join(BIN, "godwit-vm"), extra))
            return subprocess.Popen([os.path.join(BIN, "godwitd"), "--config", conf], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.umask(0))

        p = run("127.0.0.1:0")
        out, err = p.communicate(timeout=20)
        self.assertEqual(p.returncode, 1, out + err)
        self.assertIn("a token_file is required", err)
        for listen, extra in (("127.0.0.1:0", "api_no_token = on\n"), ("unix:" + os.path.join(tmp, "api.sock"), "")):
            p = run(listen, extra)
            try:
                line = p.stdout.readline()
                self.assertTrue(line.startswith("listening on"), line + p.stderr.read() if not line else line)
                if listen.startswith("unix:"):
                    mode = os.stat(listen[5:]).st_mode & 0o777
                    self.assertEqual(mode, 0o600, oct(mode))
            finally:
                p.terminate()
                p.communicate(timeout=20)

    @gwd.no_vm
    def test_state_dir_must_be_private(self):
        """A state directory others can write is refused at start; a host-state file the
        daemon cannot read means maintenance (no new VMs), never active."""
        tmp = tempfile.mkdtemp(prefix="gw-state-", dir=self.tmp)
        state = os.path.join(tmp, "state")
        os.mkdir(state)
        conf = os.path.join(tmp, "c.conf")
        port = gwd.free_port()
        with open(os.path.join(tmp, "token"), "w") as f:
            f.write(gwd.TOKEN + "\n")
        with open(conf, "w") as f:
            f.write("[daemon]\nlisten = 127.0.0.1:%d\nstate_dir = %s\ntoken_file = %s\nrunner = %s\nhostname = st\n"
                    % (port, state, os.path.join(tmp, "token"), os.path.join(BIN, "godwit-vm")))

        def start():
            return subprocess.Popen([os.path.join(BIN, "godwitd"), "--config", conf], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)

        os.chmod(state, 0o777)
        p = start()
        out, err = p.communicate(timeout=20)
        self.assertEqual(p.returncode, 1, out + err)
        self.assertIn("no other can write", err)
        os.chmod(state, 0o700)
        with open(os.path.join(state, "host-state"), "w") as f:
            f.write("\x00garbage\n")
        p = start()
        try:
            line = p.stdout.readline()
            self.assertTrue(line.startswith("listening on"), line)
            with grpc.insecure_channel("127.0.0.1:%d" % port) as ch:
                stub = gwd.stubs()[1].GodwitStub(ch)
                with self.assertRaises(grpc.RpcError) as cm:
                    stub.CreateVm(api.CreateVmRequest(name="x"), metadata=AUTH, timeout=10)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
                self.assertIn("maintenance", cm.exception.details())
        finally:
            p.terminate()
            p.communicate(timeout=20)

    def test_200_idle_strangers_do_not_block_a_migration(self):
        self.create(self.a, "busyport")
        strangers = []
        try:
            for i in range(200):
                s = socket.socket()
                s.bind(("127.0.0.%d" % (2 + i % 2), 0))    # two stranger hosts
                s.connect(("127.0.0.1", self.mport))
                strangers.append(s)
            t0 = time.monotonic()
            job = self.a.stub.MigrateVm(api.MigrateVmRequest(vm="busyport", destination=self.b.addr),
                                        metadata=AUTH, timeout=10).job
            events = list(self.a.stub.WatchJob(api.WatchJobRequest(id=job.id), metadata=AUTH, timeout=90))
            took = time.monotonic() - t0
            final = events[-1].job
            self.assertEqual(final.state, api.Job.SUCCEEDED, final.error)
            self.assertLess(took, 30)
            # host-b makes the VM its own once its runner reports that the guest runs.
            self.assertTrue(gwd.wait_for(lambda: self.b.stub.GetVm(api.GetVmRequest(name="busyport"), metadata=AUTH,
                                                                   timeout=10).vm.state == api.Vm.RUNNING, 10))
            # The strangers were evicted and closed, not served.
            self.assertIn("too many connections wait for their preamble", self.b.logtext())
            self.assertIsNotNone(closed_within(strangers[-1], 5))
        finally:
            for s in strangers:
                s.close()


if __name__ == "__main__":
    sys.exit(gwd.run_tests())
