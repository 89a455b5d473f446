#!/usr/bin/python3
"""End-to-end tests of engine/api's gRPC server with the real grpcio client.

Starts tests/api/grpc_test_server (the health service plus test.v1.Echo) on a free port and
checks: unary echo, server streaming order, every status code with its message, deadlines,
client cancellation, bearer-token auth, unknown methods, oversized and compressed messages,
and that hostile or silent TCP peers do not stop other clients.

Run with Debian's /usr/bin/python3 (python3-grpcio, python3-grpc-tools). Exits 77 (skipped)
when those are missing.
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

try:
    import grpc
    from grpc_tools import protoc
except ImportError as e:  # pragma: no cover
    print(f"skipping: {e}")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOKEN = "s3cret-token"
AUTH = (("authorization", "Bearer " + TOKEN),)


def gen_stubs(outdir):
    # health.proto is copied to the top level: a generated "grpc/health/..." package would
    # collide with the installed grpc package.
    shutil.copy(os.path.join(ROOT, "proto/grpc/health/v1/health.proto"), outdir)
    rc = protoc.main(["protoc", "-I" + HERE, "-I" + outdir, "--python_out=" + outdir,
                      "--grpc_python_out=" + outdir, "echo.proto", "health.proto"])
    if rc != 0:
        raise RuntimeError("protoc failed")
    sys.path.insert(0, outdir)


class Server:
    def __init__(self, binary, *args):
        self.tmp = tempfile.mkdtemp(prefix="gw-grpc-")
        port_file = os.path.join(self.tmp, "port")
        self.proc = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--port-file", port_file,
                                      *args], stdout=subprocess.PIPE)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise RuntimeError("server did not start: %r" % line)
        self.port = int(line.split()[-1])
        self.addr = "127.0.0.1:%d" % self.port

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            raise AssertionError("server did not stop on SIGTERM")
        shutil.rmtree(self.tmp, ignore_errors=True)
        return rc


class Suite:
    def __init__(self, server):
        import echo_pb2, echo_pb2_grpc, health_pb2, health_pb2_grpc
        self.pb, self.hpb = echo_pb2, health_pb2
        self.server = server
        self.channel = grpc.insecure_channel(server.addr)
        grpc.channel_ready_future(self.channel).result(timeout=5)
        self.stub = echo_pb2_grpc.EchoStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def req(self, **kw):
        return self.pb.EchoRequest(**kw)

    def expect_code(self, fn, code, details=None):
        try:
            fn()
        except grpc.RpcError as e:
            assert e.code() == code, f"expected {code}, got {e.code()}: {e.details()}"
            if details is not None:
                assert e.details() == details, f"details {e.details()!r} != {details!r}"
            return e
        raise AssertionError(f"expected {code}, call succeeded")

    def stats(self):
        return self.stub.Stats(self.pb.StatsRequest(), metadata=AUTH, timeout=5)

    # ------------------------------------------------------------------ tests

    def test_unary_echo(self):
        r = self.stub.Unary(self.req(text="hello", payload=b"\x00\x01\xff"), metadata=AUTH, timeout=5)
        assert r.text == "hello" and r.payload == b"\x00\x01\xff", r
        big = os.urandom(3 << 20)   # under the 4 MiB limit, several DATA frames
        r = self.stub.Unary(self.req(payload=big), metadata=AUTH, timeout=10)
        assert r.payload == big
        r = self.stub.Unary(self.req(), metadata=AUTH, timeout=5)   # empty message
        assert r.text == ""

    def test_server_stream(self):
        msgs = list(self.stub.ServerStream(self.req(text="m", count=200), metadata=AUTH, timeout=10))
        assert [m.seq for m in msgs] == list(range(200)), [m.seq for m in msgs][:10]
        assert msgs[7].text == "m 7"
        t0 = time.monotonic()
        msgs = list(self.stub.ServerStream(self.req(text="slow", count=5, delay_ms=40),
                                           metadata=AUTH, timeout=10))
        assert [m.seq for m in msgs] == list(range(5))
        assert time.monotonic() - t0 >= 0.15
        assert list(self.stub.ServerStream(self.req(count=0), metadata=AUTH, timeout=5)) == []

    def test_status_codes(self):
        for code in grpc.StatusCode:
            if code == grpc.StatusCode.OK:
                continue
            msg = f"failure {code.name}: 100% ünïcode\nline two"
            self.expect_code(lambda: self.stub.Unary(self.req(code=code.value[0], message=msg),
                                                     metadata=AUTH, timeout=5), code, msg)

    def test_deadline(self):
        before = self.stats().sleeps_cancelled
        t0 = time.monotonic()
        self.expect_code(lambda: self.stub.Sleep(self.req(delay_ms=3000), metadata=AUTH, timeout=0.3),
                         grpc.StatusCode.DEADLINE_EXCEEDED)
        assert time.monotonic() - t0 < 1.5
        # The handler sees the call cancelled (the server enforced the deadline too).
        for _ in range(100):
            if self.stats().sleeps_cancelled > before:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("handler never saw the deadline")
        r = self.stub.Sleep(self.req(delay_ms=20), metadata=AUTH, timeout=5)
        assert r.text == "slept"

    def test_cancellation(self):
        before = self.stats().cancelled_streams
        it = self.stub.ServerStream(self.req(text="c", count=100000, delay_ms=10), metadata=AUTH,
                                    timeout=30)
        first = [next(it).seq, next(it).seq]
        assert first == [0, 1]
        it.cancel()
        for _ in range(200):
            if self.stats().cancelled_streams > before:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("producer never saw the cancellation")

    def test_auth(self):
        self.expect_code(lambda: self.stub.Unary(self.req(text="x"), timeout=5),
                         grpc.StatusCode.UNAUTHENTICATED)
        self.expect_code(lambda: self.stub.Unary(self.req(text="x"), timeout=5,
                                                 metadata=(("authorization", "Bearer wrong"),)),
                         grpc.StatusCode.UNAUTHENTICATED)
        self.expect_code(lambda: self.stub.Unary(self.req(text="x"), timeout=5,
                                                 metadata=(("authorization", "Bearer " + TOKEN + "x"),)),
                         grpc.StatusCode.UNAUTHENTICATED)
        # Unknown methods are not revealed to an unauthenticated caller either.
        call = self.channel.unary_unary("/test.v1.Echo/Nope")
        self.expect_code(lambda: call(b"", timeout=5), grpc.StatusCode.UNAUTHENTICATED)

    def test_unimplemented(self):
        call = self.channel.unary_unary("/test.v1.Echo/Nope")
        self.expect_code(lambda: call(b"", metadata=AUTH, timeout=5), grpc.StatusCode.UNIMPLEMENTED)
        call = self.channel.unary_unary("/no.such.Service/Method")
        self.expect_code(lambda: call(b"", metadata=AUTH, timeout=5), grpc.StatusCode.UNIMPLEMENTED)

    def test_bogus_protobuf(self):
        call = self.channel.unary_unary("/test.v1.Echo/Unary")
        # Field 1 (string) with a length running past the end.
        self.expect_code(lambda: call(b"\x0a\xff\xff\x01abc", metadata=AUTH, timeout=5),
                         grpc.StatusCode.INVALID_ARGUMENT)

    def test_huge_message(self):
        t0 = time.monotonic()
        self.expect_code(lambda: self.stub.Unary(self.req(payload=b"\0" * (5 << 20)),
                                                 metadata=AUTH, timeout=10),
                         grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert time.monotonic() - t0 < 5
        r = self.stub.Unary(self.req(text="still here"), metadata=AUTH, timeout=5)
        assert r.text == "still here"

    def test_compressed(self):
        self.expect_code(lambda: self.stub.Unary(self.req(text="z" * 1000), metadata=AUTH, timeout=5,
                                                 compression=grpc.Compression.Gzip),
                         grpc.StatusCode.UNIMPLEMENTED)
        assert self.stub.Unary(self.req(text="ok"), metadata=AUTH, timeout=5).text == "ok"

    def test_hostile_peers(self):
        socks = []
        garbage = socket.create_connection(("127.0.0.1", self.server.port))
        garbage.sendall(os.urandom(4096))
        socks.append(garbage)
        silent = socket.create_connection(("127.0.0.1", self.server.port))
        socks.append(silent)
        # A valid preface, then half a frame header, then silence.
        half = socket.create_connection(("127.0.0.1", self.server.port))
        half.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" + b"\x00\x00\x10\x01")
        socks.append(half)
        # A frame claiming 16 MiB of payload on stream 1.
        liar = socket.create_connection(("127.0.0.1", self.server.port))
        liar.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" +
                     b"\xff\xff\xff\x00\x01\x00\x00\x00\x01" + b"x" * 100)
        socks.append(liar)
        time.sleep(0.1)
        # Other clients are served meanwhile, on the open channel and on a new one.
        for i in range(20):
            assert self.stub.Unary(self.req(text=str(i)), metadata=AUTH, timeout=2).text == str(i)
        with grpc.insecure_channel(self.server.addr) as ch:
            import echo_pb2_grpc
            assert echo_pb2_grpc.EchoStub(ch).Unary(self.req(text="new"), metadata=AUTH, timeout=5).text == "new"
        # The garbage sender is disconnected by the server.
        garbage.settimeout(3)
        try:
            data = garbage.recv(65536)
            while data:
                data = garbage.recv(65536)
        except ConnectionResetError:
            pass
        for s in socks:
            s.close()
        assert self.server.alive()

    def test_health(self):
        r = self.health.Check(self.hpb.HealthCheckRequest(), timeout=5)   # no token needed
        assert r.status == self.hpb.HealthCheckResponse.SERVING
        self.expect_code(lambda: self.health.Check(self.hpb.HealthCheckRequest(service="nope"), timeout=5),
                         grpc.StatusCode.NOT_FOUND)
        it = self.health.Watch(self.hpb.HealthCheckRequest(), timeout=5)
        assert next(it).status == self.hpb.HealthCheckResponse.SERVING
        it.cancel()
        it = self.health.Watch(self.hpb.HealthCheckRequest(service="other"), timeout=5)
        assert next(it).status == self.hpb.HealthCheckResponse.SERVICE_UNKNOWN
        it.cancel()

    def test_concurrency(self):
        errors = []
        lat = []
        lock = threading.Lock()

        def worker(n):
            try:
                with grpc.insecure_channel(self.server.addr) as ch:
                    import echo_pb2_grpc
                    stub = echo_pb2_grpc.EchoStub(ch)
                    for i in range(50):
                        t0 = time.monotonic()
                        r = stub.Unary(self.req(text=f"{n}-{i}"), metadata=AUTH, timeout=5)
                        dt = time.monotonic() - t0
                        assert r.text == f"{n}-{i}"
                        with lock:
                            lat.append(dt)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        assert not errors, errors[:3]
        lat.sort()
        print(f"    {len(lat)} calls in {wall:.2f}s over 16 connections, "
              f"p50 {lat[len(lat) // 2] * 1e3:.2f} ms, p99 {lat[int(len(lat) * 0.99)] * 1e3:.2f} ms")


def test_connection_limit(binary):
    """At the limit the oldest connection that never made a call makes room for a new one
    (strangers cannot hold every slot); when every connection has made one, a new connection
    is closed at once; the server serves again once some go."""
    import echo_pb2, echo_pb2_grpc
    server = Server(binary, "--max-connections", "2")

    def closed_soon(sock, wait=3.0):
        """Whether the server closes sock within wait s (what it sends first, its SETTINGS,
        is read past)."""
        end = time.monotonic() + wait
        try:
            while time.monotonic() < end:
                sock.settimeout(max(0.01, end - time.monotonic()))
                if sock.recv(4096) == b"":
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            pass
        return False

    def echo(ch, text):
        return echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(text=text), timeout=5).text

    try:
        own = [("grpc.use_local_subchannel_pool", 1)]   # a connection each, not one shared
        a, b = grpc.insecure_channel(server.addr, options=own), grpc.insecure_channel(server.addr, options=own)
        assert echo(a, "a") == "a" and echo(b, "b") == "b"
        extra = socket.create_connection(("127.0.0.1", server.port))
        assert closed_soon(extra), "connection over the limit was kept while every other had made a call"
        extra.close()
        b.close()
        time.sleep(0.2)
        first = socket.create_connection(("127.0.0.1", server.port))
        time.sleep(0.1)
        second = socket.create_connection(("127.0.0.1", server.port))
        assert closed_soon(first), "the oldest connection without a call was kept at the limit"
        assert not closed_soon(second, 0.5), "the newest connection was closed instead"
        assert echo(a, "still") == "still"   # one that made a call is never the one to go
        a.close()
        second.close()
        time.sleep(0.1)
        with grpc.insecure_channel(server.addr) as ch:
            assert echo(ch, "after") == "after"
    finally:
        rc = server.stop()
    assert rc == 0, f"server exited with {rc}"


def test_upload_budget(binary):
    """Parallel uploads over one connection's buffer budget: the server stops acknowledging
    request bytes (HTTP/2 flow control) until earlier calls let theirs go, so every call
    succeeds, however many a client puts on its one connection."""
    import echo_pb2, echo_pb2_grpc
    for extra, n, size in ((["--max-conn-buffer", str(4 << 20)], 6, 3 << 20),
                           ([], 10, 7 << 19)):   # the default budget, 3.5 MiB requests
        server = Server(binary, *extra)
        try:
            with grpc.insecure_channel(server.addr) as ch:
                stub = echo_pb2_grpc.EchoStub(ch)
                payloads = [bytes([65 + i]) * size for i in range(n)]
                futures = [stub.Unary.future(echo_pb2.EchoRequest(payload=p), timeout=60) for p in payloads]
                for f, p in zip(futures, payloads):
                    assert f.result().payload == p   # raises on any error, RESOURCE_EXHAUSTED included
                print(f"    {n} uploads of {size / (1 << 20):.1f} MiB on one connection served")
                assert stub.Unary(echo_pb2.EchoRequest(text="after"), timeout=5).text == "after"
        finally:
            rc = server.stop()
        assert rc == 0, f"server exited with {rc}"


def h2_frame(ftype, flags, stream, payload):
    n = len(payload)
    return bytes([n >> 16, (n >> 8) & 255, n & 255, ftype, flags]) + stream.to_bytes(4, "big") + payload


def hpack_literal(name, value):
    """A header as a literal without indexing, no Huffman (RFC 7541 6.2.2); short strings."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def stalled_stream_call(port, request):
    """A raw HTTP/2 connection that starts a ServerStream call and never opens its receive
    window (SETTINGS_INITIAL_WINDOW_SIZE 0): everything the server sends waits in its queue."""
    s = socket.create_connection(("127.0.0.1", port))
    settings = (4).to_bytes(2, "big") + (0).to_bytes(4, "big")   # INITIAL_WINDOW_SIZE = 0
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, settings))
    s.settimeout(2)
    s.recv(4096)                                  # the server's SETTINGS
    headers = b"".join(hpack_literal(n, v) for n, v in (
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/test.v1.Echo/ServerStream"),
        (b":authority", b"localhost"), (b"content-type", b"application/grpc"), (b"te", b"trailers")))
    body = request.SerializeToString()
    s.sendall(h2_frame(4, 1, 0, b"") +               # SETTINGS ACK
              h2_frame(1, 4, 1, headers) +           # HEADERS, END_HEADERS
              h2_frame(0, 1, 1, b"\x00" + len(body).to_bytes(4, "big") + body))   # DATA, END_STREAM
    return s


def test_output_budget(binary):
    """Clients that never read: each call's queue and the server's total stay within their
    budgets (streams may fill three quarters of the total; the call over it is ended,
    RESOURCE_EXHAUSTED), unary calls are still served from the last quarter meanwhile, and
    once those clients go the whole budget is back: a normal client is served in full."""
    import echo_pb2, echo_pb2_grpc
    # A stalled call queues about 0.8 MB, under the 1 MiB per call; two are over the 1.5 MiB
    # that streams may fill of the 2 MiB total.
    server = Server(binary, "--max-send-queue", str(1 << 20), "--max-send-total", str(2 << 20))
    socks = []
    try:
        req = echo_pb2.EchoRequest(text="x" * 100, count=7000)
        with grpc.insecure_channel(server.addr) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)

            def settled():
                """Stats once every producer has queued all it could."""
                end = time.monotonic() + 10
                while True:
                    st = stub.Stats(echo_pb2.StatsRequest(), timeout=5)
                    if st.producers == 0 or time.monotonic() > end:
                        return st
                    time.sleep(0.02)

            socks.append(stalled_stream_call(server.port, req))
            time.sleep(0.1)
            st = settled()
            assert st.producers == 0 and st.sends_refused == 0, st
            socks.append(stalled_stream_call(server.port, req))
            time.sleep(0.1)
            st = settled()
            assert st.producers == 0 and st.sends_refused == 1, f"the second stalled call was not cut off: {st}"
            # Streams hold their three quarters: unary calls are served, a new stream is not.
            for i in range(10):
                assert stub.Unary(echo_pb2.EchoRequest(text=str(i), payload=b"p" * 4096), timeout=5).text == str(i)
            try:
                list(stub.ServerStream(echo_pb2.EchoRequest(text="z" * 100, count=7000), timeout=10))
                raise AssertionError("a new stream was served while stalled streams held their budget")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
            for s in socks:
                s.close()
            socks = []
            # The budget comes back with the connections: 7,000 replies (about 0.8 MB) in full.
            end = time.monotonic() + 5
            while True:
                try:
                    got = list(stub.ServerStream(echo_pb2.EchoRequest(text="y" * 100, count=7000), timeout=10))
                    break
                except grpc.RpcError as e:
                    if time.monotonic() > end:
                        raise AssertionError(f"budget never came back: {e.code()} {e.details()}")
                    time.sleep(0.1)
            assert len(got) == 7000 and got[-1].seq == 6999
    finally:
        for s in socks:
            s.close()
        rc = server.stop()
    assert rc == 0, f"server exited with {rc}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("-k", default="", help="run only tests whose name contains this")
    args = ap.parse_args()
    if not os.access(args.server, os.X_OK):
        print(f"skipping: no server binary {args.server}")
        return 77
    tmp = tempfile.mkdtemp(prefix="gw-grpc-stubs-")
    failed = 0
    server = None
    try:
        gen_stubs(tmp)
        server = Server(args.server, "--token", TOKEN)
        suite = Suite(server)
        names = [n for n in dir(Suite) if n.startswith("test_") and args.k in n]
        for name in names:
            t0 = time.monotonic()
            try:
                getattr(suite, name)()
                print(f"ok   {name} ({time.monotonic() - t0:.2f}s)", flush=True)
            except Exception as e:  # noqa: BLE001 - one line per failure
                failed += 1
                print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            if not server.alive():
                print("FAIL server died", flush=True)
                failed += 1
                break
        suite.channel.close()
        # Tests that need a server of their own, configured differently.
        for name, fn in (("test_connection_limit", test_connection_limit),
                         ("test_upload_budget", test_upload_budget),
                         ("test_output_budget", test_output_budget)):
            if args.k not in name:
                continue
            t0 = time.monotonic()
            try:
                fn(args.server)
                print(f"ok   {name} ({time.monotonic() - t0:.2f}s)", flush=True)
            except Exception as e:  # noqa: BLE001
                failed += 1
                print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
    finally:
        if server and server.alive():
            rc = server.stop()
            if rc != 0:
                print(f"FAIL server exited with {rc}")
                failed += 1
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
