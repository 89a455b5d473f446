#!/usr/bin/env python3
"""The API port over TLS, with the real grpcio client and certificates made at test time by
the openssl CLI: calls over TLS (ALPN h2) work with the token; an h2c client gets nothing;
with api_client_ca a client without a certificate of that CA is refused and one with it is
served; a daemon on a non-loopback address refuses to start without a token, and without
TLS unless api_h2c = on.

Run with Debian's /usr/bin/python3 (python3-grpcio, python3-grpc-tools)."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwd  # noqa: E402
from gwd import AUTH, grpc  # noqa: E402

BIN = gwd.build_dir() if len(sys.argv) < 2 else os.path.abspath(sys.argv.pop(1))
api, api_grpc = gwd.stubs()[0], gwd.stubs()[1]


def openssl(cwd, *args):
    r = subprocess.run(["openssl"] + list(args), capture_output=True, text=True, cwd=cwd)
    assert r.returncode == 0, r.stderr


def make_ca(d, name):
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".pem")
    openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
            "-subj", "/CN=" + name, "-keyout", key, "-out", crt)
    return key, crt


def make_cert(d, ca, name, san=None):
    key, csr, crt, ext = (os.path.join(d, name + s) for s in (".key", ".csr", ".pem", ".ext"))
    openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=" + name,
            "-keyout", key, "-out", csr)
    args = ["x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0], "-CAcreateserial", "-days", "1", "-out", crt]
    if san:
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\n" % san)
        args += ["-extfile", ext]
    openssl(d, *args)
    return key, crt


def read(path):
    with open(path, "rb") as f:
        return f.read()


class ApiTls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not shutil.which("openssl"):
            raise AssertionError("the openssl CLI is needed to make the test certificates")
        cls.tmp = tempfile.mkdtemp(prefix="gw-apitls-")
        cls.ca = make_ca(cls.tmp, "api-ca")
        cls.server = make_cert(cls.tmp, cls.ca, "host-a", san="IP:127.0.0.1,DNS:localhost")
        cls.client = make_cert(cls.tmp, cls.ca, "operator")
        cls.other_ca = make_ca(cls.tmp, "other-ca")
        cls.stranger = make_cert(cls.tmp, cls.other_ca, "stranger")
        cls.d = gwd.Daemon(BIN, "tls-host", extra="api_cert = %s\napi_key = %s\n" % (cls.server[1], cls.server[0]))
        cls.m = gwd.Daemon(BIN, "mtls-host", extra="api_cert = %s\napi_key = %s\napi_client_ca = %s\n"
                           % (cls.server[1], cls.server[0], cls.ca[1]))

    @classmethod
    def tearDownClass(cls):
        for d in (cls.d, cls.m):
            d.cleanup()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def secure(self, addr, client=None):
        creds = grpc.ssl_channel_credentials(root_certificates=read(self.ca[1]),
                                             private_key=read(client[0]) if client else None,
                                             certificate_chain=read(client[1]) if client else None)
        ch = grpc.secure_channel(addr, creds)
        self.addCleanup(ch.close)
        return api_grpc.GodwitStub(ch)

    def test_tls_call_with_token(self):
        stub = self.secure(self.d.addr)
        self.assertEqual(list(stub.ListVms(api.ListVmsRequest(), metadata=AUTH, timeout=10).vms), [])
        # TLS does not replace the token.
        with self.assertRaises(grpc.RpcError) as cm:
            stub.ListVms(api.ListVmsRequest(), timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)

    def test_h2c_client_gets_nothing(self):
        ch = grpc.insecure_channel(self.d.addr)
        self.addCleanup(ch.close)
        with self.assertRaises(grpc.RpcError) as cm:
            api_grpc.GodwitStub(ch).ListVms(api.ListVmsRequest(), metadata=AUTH, timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_mtls(self):
        ok = self.secure(self.m.addr, client=self.client)
        self.assertEqual(list(ok.ListVms(api.ListVmsRequest(), metadata=AUTH, timeout=10).vms), [])
        for who in (None, self.stranger):
            with self.assertRaises(grpc.RpcError) as cm:
                self.secure(self.m.addr, client=who).ListVms(api.ListVmsRequest(), metadata=AUTH, timeout=5)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def cli(self, addr, *args):
        tok = os.path.join(self.tmp, "token")
        with open(tok, "w") as f:
            f.write(gwd.TOKEN + "\n")
        r = subprocess.run([os.path.join(BIN, "godwit"), "--addr", addr, "--token-file", tok] + list(args),
                           capture_output=True, text=True, timeout=30, env=dict(os.environ, HOME=self.tmp))
        return r.returncode, r.stdout + r.stderr

    def test_cli_and_c_client_over_tls(self):
        rc, out = self.cli(self.d.addr, "--tls-ca", self.ca[1], "host")
        self.assertEqual(rc, 0, out)
        # Without TLS the CLI gets nothing; with a CA that did not sign the server, it refuses it.
        rc, out = self.cli(self.d.addr, "host")
        self.assertNotEqual(rc, 0, out)
        rc, out = self.cli(self.d.addr, "--tls-ca", self.other_ca[1], "host")
        self.assertEqual(rc, 5, out)
        self.assertIn("certificate", out)
        # mTLS: with the operator's certificate, and refused without one.
        rc, out = self.cli(self.m.addr, "--tls-ca", self.ca[1], "--tls-cert", self.client[1], "--tls-key",
                           self.client[0], "host")
        self.assertEqual(rc, 0, out)
        rc, out = self.cli(self.m.addr, "--tls-ca", self.ca[1], "host")
        self.assertNotEqual(rc, 0, out)

    def test_migration_between_tls_apis(self):
        if not gwd.kvm_usable():
            self.skipTest("/dev/kvm is not usable here")
        # host-x calls its peer host-y's API over mutual TLS (peer_ca, its api_cert as the client's).
        y_port = gwd.free_port()
        tls = "api_cert = %s\napi_key = %s\napi_client_ca = %s\npeer_ca = %s\n" % (
            self.server[1], self.server[0], self.ca[1], self.ca[1])
        x = gwd.Daemon(BIN, "host-x", extra=tls + "peers = 127.0.0.1:%d\n" % y_port)
        self.addCleanup(x.cleanup)
        y = gwd.Daemon(BIN, "host-y", port=y_port, extra=tls + "migration_port = %d\npeers = %s\n" %
                       (gwd.free_port(), x.addr))
        self.addCleanup(y.cleanup)
        sx, sy = self.secure(x.addr, client=self.client), self.secure(y.addr, client=self.client)
        sx.CreateVm(api.CreateVmRequest(name="tlsmove", memory_bytes=64 << 20, vcpus=1, guest="idle:ws=8M",
                                        start=True), metadata=AUTH, timeout=60)
        job = sx.MigrateVm(api.MigrateVmRequest(vm="tlsmove", destination=y.addr), metadata=AUTH, timeout=10).job
        final = list(sx.WatchJob(api.WatchJobRequest(id=job.id), metadata=AUTH, timeout=90))[-1].job
        self.assertEqual(final.state, api.Job.SUCCEEDED, final.error)
        self.assertTrue(gwd.wait_for(lambda: sy.GetVm(api.GetVmRequest(name="tlsmove"), metadata=AUTH,
                                                      timeout=10).vm.state == api.Vm.RUNNING, 10))

    def start_bare(self, conf_extra, with_token):
        d = tempfile.mkdtemp(dir=self.tmp)
        lines = ["[daemon]", "listen = 0.0.0.0:%d" % gwd.free_port(), "state_dir = %s/state" % d,
                 "runner = %s" % os.path.join(BIN, "godwit-vm")]
        if with_token:
            with open(os.path.join(d, "token"), "w") as f:
                f.write(gwd.TOKEN + "\n")
            lines.append("token_file = token")
        conf = os.path.join(d, "godwitd.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines + conf_extra) + "\n")
        p = subprocess.Popen([os.path.join(BIN, "godwitd"), "--config", conf], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        if line.startswith("listening on"):
            p.terminate()
            p.communicate(timeout=15)
            return 0, ""
        _, err = p.communicate(timeout=15)
        return p.returncode, err

    def test_non_loopback_needs_a_token_and_tls(self):
        rc, err = self.start_bare([], with_token=False)
        self.assertEqual(rc, 1, err)
        self.assertIn("a token_file is required", err)
        rc, err = self.start_bare([], with_token=True)
        self.assertEqual(rc, 1, err)
        self.assertIn("configure api_cert and api_key", err)
        rc, err = self.start_bare(["api_h2c = on"], with_token=True)
        self.assertEqual(rc, 0, err)
        rc, err = self.start_bare(["api_cert = %s" % self.server[1], "api_key = %s" % self.server[0]], with_token=True)
        self.assertEqual(rc, 0, err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
