#!/usr/bin/env python3
"""The encrypted migration channel between two real godwit-vm runners on loopback.

A relay between the two hosts flips one byte of the source's HELLO, of a page, and of the VM
STATE (each inside its TLS record): the migration fails, the destination reports a record
that failed authentication and never serves the VM, and the guest runs on at the source. A
clean run through the same relay succeeds (the relay itself is transparent). X.509 mutual
authentication with certificates made at test time by the openssl CLI works, and a
certificate from another CA is refused on both sides; a plaintext source is refused by a TLS
destination with a reason."""
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

VM = gwtest.binary("godwit-vm")
SECRET = "tls-test-cluster-secret-0123456789abcdef\n"
PREAMBLE = 48
APPDATA = 23       # TLS record type of application data (every record after the handshake)
SMALL = 200        # a TLS record this short holds a tiny control record (END_OF_ROUND, DIGEST, ...)


class Relay:
    """A man in the middle on loopback: forwards the source's stream to the destination and
    back, parsing the source's TLS records, and flips one byte in the body of the one chosen by
    `mode`: "hello" (the second application-data record: the first is the client's Finished),
    "page" (the 20th full-size record: page data), "state" (the mid-size record between the
    final END_OF_ROUND and DIGEST/COMMIT, recognised when the source falls quiet waiting for
    READY), or None (no flip)."""

    def __init__(self, dst_port, mode):
        self.dst_port = dst_port
        self.mode = mode
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.flipped = None            # (record index, length) once done
        self.records = []              # lengths of the source's application-data records
        self.threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()

    def close(self):
        self.ls.close()

    def _accept(self):
        try:
            while True:
                c, _ = self.ls.accept()
                d = socket.create_connection(("127.0.0.1", self.dst_port))
                for args in ((c, d, True), (d, c, False)):
                    t = threading.Thread(target=self._pump, args=args, daemon=True)
                    t.start()
                    self.threads.append(t)
        except OSError:
            pass

    def _flip(self, rec):
        rec = bytearray(rec)
        rec[5 + (len(rec) - 5) // 2] ^= 0x01     # inside the encrypted body
        return bytes(rec)

    def _pump(self, a, b, upstream):
        buf = b""
        pre = 0 if not upstream else PREAMBLE
        held = []                       # upstream records not yet forwarded (mode "state")
        appdata = 0
        big = 0
        try:
            while True:
                r, _, _ = select.select([a], [], [], 0.1)
                if not r:
                    if held:             # the source is quiet: waiting for an answer
                        if (self.mode == "state" and self.flipped is None and len(held) >= 4 and
                                len(held[-4]) < SMALL and SMALL <= len(held[-3]) < 16000 and
                                len(held[-2]) < SMALL and len(held[-1]) < SMALL):
                            self.flipped = ("state", len(held[-3]))
                            held[-3] = self._flip(held[-3])
                        b.sendall(b"".join(held))
                        held = []
                    continue
                data = a.recv(65536)
                if not data:
                    break
                if not upstream:
                    b.sendall(data)
                    continue
                buf += data
                out = []
                if pre:
                    k = min(pre, len(buf))
                    out.append(buf[:k])
                    buf = buf[k:]
                    pre -= k
                while len(buf) >= 5:
                    n = int.from_bytes(buf[3:5], "big")
                    if len(buf) < 5 + n:
                        break
                    rec, buf = buf[:5 + n], buf[5 + n:]
                    if rec[0] == APPDATA:
                        appdata += 1
                        self.records.append(n)
                        big += n >= 16000
                        if self.flipped is None and (
                                (self.mode == "hello" and appdata == 2) or
                                (self.mode == "page" and n >= 16000 and big == 20)):
                            self.flipped = (self.mode, n)
                            rec = self._flip(rec)
                    if self.mode == "state":
                        held.append(rec)
                        if len(held) > 4:
                            out.append(held.pop(0))
                    else:
                        out.append(rec)
                if out:
                    b.sendall(b"".join(out))
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Pair:
    """A source runner with a guest, and a destination runner waiting for it (TLS options
    given to each)."""

    def __init__(self, dir, src_tls=(), dst_tls=(), guest="idle:ws=4M"):
        self.dir = dir
        self.secret = os.path.join(dir, "secret")
        with open(self.secret, "w") as f:
            f.write(SECRET)
        self.src_sock = os.path.join(dir, "src.sock")
        self.dst_sock = os.path.join(dir, "dst.sock")
        self.src_tls = list(src_tls)
        self.dst = subprocess.Popen([VM, "incoming", "--listen", "tcp:127.0.0.1:0", "--secret-file", self.secret,
                                     "--control", self.dst_sock, "--seconds", "2", "--json"] + list(dst_tls),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.dst.stdout.readline()
        self.dst_port = int(gwtest.last_json(line)["listening"].rsplit(":", 1)[1])
        self.src = subprocess.Popen([VM, "run", "--name", "tlsvm", "--memory", "128M", "--guest", guest,
                                     "--control", self.src_sock, "--secret-file", self.secret, "--json"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert gwtest.wait_for_path(self.src_sock), "source runner did not start"
        end = time.time() + 60
        while time.time() < end:
            st = self.status()
            if st and st.get("guest_ready"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("guest never became ready")

    def status(self):
        r = gwtest.run([VM, "status", "--control", self.src_sock, "--json"], timeout=10)
        return gwtest.last_json(r.stdout) if r.returncode == 0 else None

    def migrate(self, port, *args):
        r = gwtest.run([VM, "migrate", "--control", self.src_sock, "--to", "tcp:127.0.0.1:%d" % port,
                        "--streams", "1", "--wait", "--json"] + self.src_tls + list(args), timeout=120)
        return r.returncode, (gwtest.last_json(r.stdout) if "{" in r.stdout else {}), r.stderr

    def finish_dst(self, timeout=30):
        out, err = self.dst.communicate(timeout=timeout)
        return self.dst.returncode, err

    def kill_all(self):
        for p in (self.src, self.dst):
            if p.poll() is None:
                p.kill()
                p.communicate()


class TlsChannel(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="godwit-tls-")
        self.pairs = []

    def tearDown(self):
        for p in self.pairs:
            p.kill_all()
        shutil.rmtree(self.dir, ignore_errors=True)

    def pair(self, **kw):
        d = tempfile.mkdtemp(dir=self.dir)
        p = Pair(d, **kw)
        self.pairs.append(p)
        return p

    def assert_runs_on_source(self, p):
        st = p.status()
        self.assertEqual(st["state"], "running", st)
        a = st["guest_pages_verified"]
        time.sleep(0.4)
        st = p.status()
        self.assertGreater(st["guest_pages_verified"], a)
        self.assertEqual(st["guest_verify_errors"], 0)
        self.assertFalse(os.path.exists(p.dst_sock))     # the destination never served the VM

    def tampered(self, mode):
        p = self.pair()
        relay = Relay(p.dst_port, mode)
        try:
            code, final, err = p.migrate(relay.port)
        finally:
            relay.close()
        self.assertIsNotNone(relay.flipped, "the relay found no %s record to flip: %s" % (mode, relay.records[:40]))
        self.assertNotEqual(code, 0, final)
        self.assertEqual(final.get("phase"), "failed", final)
        dcode, derr = p.finish_dst()
        self.assertEqual(dcode, 1, derr)
        self.assertIn("failed authentication", derr)
        self.assert_runs_on_source(p)

    def test_relay_without_tampering_is_transparent(self):
        p = self.pair()
        relay = Relay(p.dst_port, None)
        try:
            code, final, err = p.migrate(relay.port)
        finally:
            relay.close()
        self.assertEqual(code, 0, final)
        self.assertEqual(final["phase"], "completed", final)
        dcode, derr = p.finish_dst()
        self.assertEqual(dcode, 0, derr)
        self.assertIn("TLS 1.3 TLS_AES_128_GCM_SHA256 (cluster PSK)", derr)
        self.assertTrue("user-space TLS" in derr or "kernel TLS" in derr, derr)

    def test_aes256_for_an_older_destination(self):
        # A source told that its destination predates AES-128 (the daemon: no tls_aes128 in
        # PrepareIncomingResponse) offers AES-256 only, and the migration runs under it.
        p = self.pair()
        code, final, err = p.migrate(p.dst_port, "--tls-suite", "aes256")
        self.assertEqual(code, 0, final)
        self.assertEqual(final["phase"], "completed", final)
        dcode, derr = p.finish_dst()
        self.assertEqual(dcode, 0, derr)
        self.assertIn("TLS 1.3 TLS_AES_256_GCM_SHA384 (cluster PSK)", derr)

    def test_flipped_byte_of_hello(self):
        self.tampered("hello")

    def test_flipped_byte_of_a_page(self):
        self.tampered("page")

    def test_flipped_byte_of_state(self):
        self.tampered("state")

    def test_plaintext_source_refused_by_tls_destination(self):
        p = self.pair()
        code, final, err = p.migrate(p.dst_port, "--tls", "off")
        self.assertNotEqual(code, 0, final)
        self.assertEqual(final.get("phase"), "failed", final)
        self.assert_runs_on_source(p)
        # On a listener of its own the destination closes such a stream with the reason and
        # waits on for its real source: a stranger cannot end the wait.
        time.sleep(0.3)
        self.assertIsNone(p.dst.poll())
        p.dst.kill()
        dcode, derr = p.finish_dst()
        self.assertIn("does not speak TLS but this destination has migration TLS on", derr)

    def openssl(self, *args):
        r = subprocess.run(["openssl"] + list(args), capture_output=True, text=True, cwd=self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)

    def ca(self, name):
        key, crt = os.path.join(self.dir, name + ".key"), os.path.join(self.dir, name + ".pem")
        self.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                     "-subj", "/CN=" + name, "-keyout", key, "-out", crt)
        return key, crt

    def cert(self, ca, name):
        key, csr, crt = (os.path.join(self.dir, name + s) for s in (".key", ".csr", ".pem"))
        self.openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=" + name,
                     "-keyout", key, "-out", csr)
        self.openssl("x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0], "-CAcreateserial", "-days", "1",
                     "-out", crt)
        return ["--tls-cert", crt, "--tls-key", key, "--tls-ca", ca[1]]

    def test_mtls_with_the_operators_ca(self):
        if not shutil.which("openssl"):
            self.fail("the openssl CLI is needed to make the test certificates")
        ca = self.ca("cluster-ca")
        p = self.pair(src_tls=self.cert(ca, "host-a"), dst_tls=self.cert(ca, "host-b"))
        code, final, err = p.migrate(p.dst_port)
        self.assertEqual(code, 0, final)
        self.assertEqual(final["phase"], "completed", final)
        dcode, derr = p.finish_dst()
        self.assertEqual(dcode, 0, derr)
        self.assertIn("(X.509, mutual)", derr)

    def test_mtls_certificate_of_another_ca_refused(self):
        ca, other = self.ca("cluster-ca"), self.ca("rogue-ca")
        p = self.pair(src_tls=self.cert(other, "intruder"), dst_tls=self.cert(ca, "host-b"))
        code, final, err = p.migrate(p.dst_port)
        self.assertNotEqual(code, 0, final)
        self.assertIn("authentication failed", final.get("migration_error", "") + err)
        dcode, derr = p.finish_dst()
        self.assertEqual(dcode, 1, derr)
        self.assertIn("authentication failed", derr)
        self.assert_runs_on_source(p)


if __name__ == "__main__":
    gwtest.require_kvm()
    unittest.main(verbosity=2)
