#!/usr/bin/env python3
"""A hostile peer against the real migration runners. An "evil source" written here speaks the
wire protocol of docs/migration-wire.md (24-byte record headers, the HELLO / CHALLENGE / AUTH
handshake with HMAC-SHA256 over the cluster secret, PAGE_BATCH, END_OF_ROUND, STATE, DIGEST,
COMMIT, GO) to a real `godwit-vm incoming`, and an "evil destination" answers a real source
runner. Positive controls first prove the evil source right: well-formed batches of every
encoding land in guest memory (the destination's own memory digest says so) and a clean
hang-up is reported as just that. Every hostile input must then make the destination exit 1
within seconds, name that input's problem in its own words (never the plain hang-up of the
control), and start no VM; a destination that fails the handshake must leave the source's VM
running."""
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwtest  # noqa: E402

VM = gwtest.binary("godwit-vm")
ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

# ----------------------------------------------------------------- protobuf modules
# Generated from the repository's .proto files at test time, so the test speaks exactly the
# messages the runners were built from.
_PB_DIR = tempfile.mkdtemp(prefix="godwit-hostile-pb-")
subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(ROOT, "proto"),
                "--python_out=" + _PB_DIR] +
               [os.path.join(ROOT, "proto", "godwit", "v1", f) for f in ("migration.proto", "state.proto", "api.proto")],
               check=True)
sys.path.insert(0, _PB_DIR)
from godwit.v1 import migration_pb2 as mig  # noqa: E402
from godwit.v1 import state_pb2 as state  # noqa: E402

# ----------------------------------------------------------------- wire constants
MAGIC = 0x314D5747
HEADER = struct.Struct("<IBBHIIQ")      # magic, type, flags, reserved, length, stream, seq
assert HEADER.size == 24
MAX_PAYLOAD = 16 * 1024 * 1024 + 64 * 1024
MAX_HANDSHAKE_PAYLOAD = 64 * 1024
WIRE_VERSION = 1
F_LZ4 = 1
F_RDMA_WRITE = 16    # GW_WIRE_F_RDMA_WRITE: only on connections with RDMA verbs
(HELLO, CHALLENGE, AUTH, PAGE_BATCH, END_OF_ROUND, STATE, DIGEST, SWITCHOVER, COMMIT, ACK, ERROR, GO,
 RUNNING) = range(1, 14)
ROLE_SRC, ROLE_DST = 1, 2
MAC_LABEL = b"godwit-mig-v1"
RAW, ZERO, LZ4 = 0, 1, 2
PAGE = 4096
LZ4_MAX = 4032

MEM = 64 << 20                           # the small VM every session announces
NPAGES = MEM // PAGE
SECRET = b"hostile-test-cluster-secret-0123456789"
EACCES = 13


def mac(secret, role, nonce_s, nonce_d):
    """engine/transport/handshake.c gw_hs_mac: HMAC-SHA256(K, label || role || nonce_s || nonce_d)."""
    return hmac.new(secret, MAC_LABEL + bytes([role]) + nonce_s + nonce_d, hashlib.sha256).digest()


# ----------------------------------------------------------------- page batches and lz4
def page_batch(pages, reserved=0):
    """PAGE_BATCH payload: u32 npages | u32 reserved | npages x {u64 pfn, u8 enc, u8 pad[3], u32 len}
    | data. pages: (pfn, enc, data) with data b"" for ZERO."""
    out = struct.pack("<II", len(pages), reserved)
    for pfn, enc, data in pages:
        out += struct.pack("<QB3xI", pfn, enc, len(data))
    return out + b"".join(d for _, _, d in pages)


def _lz4_len(n):
    """The extra length bytes of an lz4 length that did not fit its 4-bit field (n >= 15)."""
    n -= 15
    return b"\xff" * (n // 255) + bytes([n % 255])


def lz4_periodic(pattern, total=PAGE):
    """A hand-made lz4 block (LZ4 block format: token, literals, offset, match length, and a
    literal-only last sequence of at least 5 bytes) that decodes to `pattern` repeated up to
    `total` bytes: the pattern as literals, one overlapping match at offset len(pattern), the
    last 5 bytes as literals."""
    p = len(pattern)
    assert 0 < p < 15
    match = total - p - 5
    assert match >= 4
    ml = match - 4
    block = bytes([(p << 4) | min(ml, 15)]) + pattern + struct.pack("<H", p)
    if ml >= 15:
        block += _lz4_len(ml)
    full = (pattern * (total // p + 1))[:total]
    return block + bytes([5 << 4]) + full[-5:], full


def lz4_literals(data):
    """An lz4 block of one literal-only sequence: token 0xF0, length bytes, the literals."""
    n = len(data)
    return (bytes([0xF0]) + _lz4_len(n) if n >= 15 else bytes([n << 4])) + data


def lz4_decode(block, cap=PAGE):
    """A small reference decoder of the LZ4 block format: checks the hand-made blocks above
    before they are aimed at the destination. Raises ValueError where LZ4_decompress_safe fails."""
    out = bytearray()
    i = 0
    while True:
        if i >= len(block):
            raise ValueError("block ends without a last sequence")
        token = block[i]
        i += 1
        n = token >> 4
        if n == 15:
            while True:
                b = block[i]
                i += 1
                n += b
                if b != 255:
                    break
        if i + n > len(block) or len(out) + n > cap:
            raise ValueError("literals past the block or the output")
        out += block[i:i + n]
        i += n
        if i == len(block):
            return bytes(out)
        off = block[i] | block[i + 1] << 8
        i += 2
        if off == 0 or off > len(out):
            raise ValueError("match offset before the start of the output")
        m = token & 15
        if m == 15:
            while True:
                b = block[i]
                i += 1
                m += b
                if b != 255:
                    break
        m += 4
        if len(out) + m > cap:
            raise ValueError("match past the output")
        for _ in range(m):
            out.append(out[-off])


# ----------------------------------------------------------------- the destination runner
class Destination:
    """`godwit-vm incoming` on a free loopback port, with a control socket that must never
    appear (it is opened only for a VM that arrived and runs)."""

    def __init__(self, workdir, secret=SECRET):
        self.dir = workdir
        self.secret_file = os.path.join(workdir, "secret-%d" % id(self))
        with open(self.secret_file, "wb") as f:
            f.write(secret + b"\n")        # the runner strips trailing white space
        self.sock = os.path.join(workdir, "dst-%d.sock" % id(self))
        # Plaintext: these tests speak the record protocol itself (TLS has its own tests).
        self.proc = subprocess.Popen([VM, "incoming", "--listen", "tcp:127.0.0.1:0", "--tls", "off",
                                      "--secret-file", self.secret_file,
                                      "--control", self.sock, "--seconds", "2", "--json"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        url = json.loads(line)["listening"]
        m = re.fullmatch(r"tcp:([0-9.]+):(\d+)", url)
        assert m, url
        self.port = int(m.group(2))
        # Watch for the control socket the whole time: it must never appear, not even briefly.
        self.sock_seen = False
        self._watch = threading.Thread(target=self._watch_sock, daemon=True)
        self._watch.start()
        self.code = self.out = self.err = None
        self.elapsed = None

    def _watch_sock(self):
        while self.proc.poll() is None:
            if os.path.exists(self.sock):
                self.sock_seen = True
            time.sleep(0.02)
        if os.path.exists(self.sock):
            self.sock_seen = True

    def finish(self, timeout=10.0):
        """Waits for the runner to exit; returns (code, stdout, stderr). A runner still alive
        after `timeout` seconds is killed and reported as hanging."""
        t0 = time.time()
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError("destination still running %.0f s after the hostile input (hangs or accepted "
                                 "it)\nstdout: %s\nstderr: %s" % (timeout, out, err))
        self.elapsed = time.time() - t0
        self._watch.join(timeout=2)
        self.code, self.out, self.err = self.proc.returncode, out, err
        return self.code, out, err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


# ----------------------------------------------------------------- the evil source
def vm_config(memory=MEM):
    """What gw_vm_describe sends for `--memory 64M --vcpus 1 --guest idle:ws=4M`: below the
    MMIO hole, so one region at gpa 0 covering all of it at memfd offset 0."""
    return state.VmConfig(name="evil", memory_bytes=memory, vcpus=1, guest_spec="idle:ws=4M",
                          regions=[state.MemoryRegion(gpa=0, size=memory, offset=0)])


class PeerClosed(Exception):
    pass


class EvilSource:
    """One connection of a migration session, driven record by record (the evil destination
    below uses it for the accepted side, sock=)."""

    def __init__(self, port=None, stream=0, sock=None):
        self.s = sock or socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s.settimeout(10)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = stream
        self.seq = 0
        self.rseq = 0
        self.errors = []                  # MigError records the destination sent us
        self.got = []                     # types of every record it sent

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def send_raw(self, data):
        """Sends bytes; a destination that already hung up is fine (it may refuse early)."""
        try:
            self.s.sendall(data)
            return True
        except OSError:
            return False

    def header(self, rtype, length, stream=None, seq=None, flags=0, reserved=0, magic=MAGIC):
        h = HEADER.pack(magic, rtype, flags, reserved, length, self.stream if stream is None else stream,
                        self.seq if seq is None else seq)
        self.seq += 1
        return h

    def send(self, rtype, payload=b"", **kw):
        if not isinstance(payload, (bytes, bytearray)):
            payload = payload.SerializeToString()
        return self.send_raw(self.header(rtype, len(payload), **kw) + payload)

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.s.recv(n - len(buf))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise PeerClosed("destination closed after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return buf

    def recv(self):
        """One record from the destination, checked like the runner checks ours."""
        magic, rtype, flags, reserved, length, stream, seq = HEADER.unpack(self._recv_exact(HEADER.size))
        assert magic == MAGIC and flags == 0 and reserved == 0, "bad header from the destination"
        assert 1 <= rtype <= RUNNING, rtype
        assert stream == self.stream, (stream, self.stream)
        assert seq == self.rseq, (seq, self.rseq)
        assert length <= MAX_PAYLOAD
        self.rseq += 1
        self.got.append(rtype)
        payload = self._recv_exact(length)
        if rtype == ERROR:
            self.errors.append(mig.MigError.FromString(payload))
        return rtype, payload

    def drain(self, timeout=10.0):
        """Reads until the destination hangs up, collecting its ERROR records."""
        self.s.settimeout(timeout)
        try:
            while True:
                self.recv()
        except (PeerClosed, OSError):
            pass

    def hello(self, mem_size=MEM, config=None, nstreams=1, features=F_LZ4, session=None):
        self.nonce_s = os.urandom(32)
        h = mig.MigHello(version=WIRE_VERSION, features=features, nonce=self.nonce_s,
                         session_id=session or os.urandom(16), stream_index=self.stream, nstreams=nstreams,
                         mem_size=mem_size)
        if self.stream == 0:
            h.config.CopyFrom(config or vm_config(mem_size))
        self.send(HELLO, h)

    def challenge(self):
        rtype, payload = self.recv()
        assert rtype == CHALLENGE, "expected CHALLENGE, got type %d" % rtype
        ch = mig.MigChallenge.FromString(payload)
        assert ch.version == WIRE_VERSION, ch
        assert len(ch.nonce) == 32, ch
        assert ch.nonce != self.nonce_s
        assert ch.features & ~F_LZ4 == 0, ch
        self.nonce_d = ch.nonce
        self.features = ch.features
        return ch

    def handshake(self, secret=SECRET, **kw):
        """The whole source side of the handshake, checking the destination's proof."""
        self.hello(**kw)
        self.challenge()
        self.send(AUTH, mig.MigAuth(mac=mac(secret, ROLE_SRC, self.nonce_s, self.nonce_d)))
        rtype, payload = self.recv()
        assert rtype == AUTH, "expected AUTH, got type %d (%s)" % (rtype, self.errors)
        got = mig.MigAuth.FromString(payload).mac
        assert hmac.compare_digest(got, mac(SECRET, ROLE_DST, self.nonce_s, self.nonce_d)), \
            "the destination's AUTH does not prove the cluster secret"
        return self

    def batch(self, pages, **kw):
        return self.send(PAGE_BATCH, page_batch(pages), **kw)

    def end_of_round(self, rnd, pages, final=False):
        return self.send(END_OF_ROUND, mig.MigEndOfRound(round=rnd, pages=pages, final=final))


def pattern_page(seed):
    """A page of non-repeating, deterministic bytes."""
    out = b""
    i = 0
    while len(out) < PAGE:
        out += hashlib.sha256(b"%d-%d" % (seed, i)).digest()
        i += 1
    return out[:PAGE]


# ----------------------------------------------------------------- the tests
class EvilSourceTest(unittest.TestCase):
    """Fresh destinations for an evil source, and what every refusal must look like."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="godwit-hostile-")
        self.dests = []
        self.conns = []

    def tearDown(self):
        for c in self.conns:
            c.close()
        for d in self.dests:
            d.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def dest(self, **kw):
        d = Destination(self.dir, **kw)
        self.dests.append(d)
        return d

    def source(self, d, handshake=True, **kw):
        c = EvilSource(d.port)
        self.conns.append(c)
        if handshake:
            c.handshake(**kw)
        return c

    def assert_discarded(self, d, code, out, err):
        """The destination failed the migration and never ran a VM."""
        self.assertEqual(code, 1, "exit code %s\nstdout: %s\nstderr: %s" % (code, out, err))
        self.assertIn("incoming migration failed", err)
        final = gwtest.last_json(out)
        self.assertEqual(final.get("status"), "error", final)
        self.assertEqual(final.get("state"), "discarded", final)
        for line in out.splitlines():
            if line.startswith("{"):
                self.assertNotEqual(json.loads(line).get("state"), "running", out)
        self.assertFalse(d.sock_seen, "the destination opened its control socket: a VM ran")
        self.assertFalse(os.path.exists(d.sock))
        self.assertNotIn("arrived by migration", err)
        return final

    def refused(self, d, c, expect, close_first=False, acked=False):
        """The destination must notice the hostile input ITSELF: the connection stays open
        until it exits (close_first only where the hang-up is the hostile input), exits 1
        within seconds, names `expect` (a string or a list of strings), and does not merely
        report the hang-up of a well-behaved session."""
        if close_first:
            c.close()
        code, out, err = d.finish(timeout=10)
        if not close_first:
            c.drain(timeout=2)
            c.close()
        self.assert_discarded(d, code, out, err)
        self.assertLess(d.elapsed, 8.0)
        for e in [expect] if isinstance(expect, str) else expect:
            self.assertIn(e, err)
        if not close_first:
            self.assertNotIn("connection to the source ended", err)
        if not acked:
            self.assertNotIn(ACK, c.got)   # never READY (unless the test brought it there)
        self.assertNotIn(RUNNING, c.got)   # and never RUNNING
        return err

    def digest_here(self, err):
        m = re.search(r"memory digest differs: source ([0-9a-f]{32}), here ([0-9a-f]{32})", err)
        self.assertTrue(m, err)
        return m.group(2)


class Hostile(EvilSourceTest):

    # ---------------------------------------------------------- positive controls
    @gwtest.no_vm
    def test_00_lz4_blocks_are_well_formed(self):
        block, page = lz4_periodic(b"godwit!")
        self.assertEqual(lz4_decode(block), page)
        self.assertLessEqual(len(block), LZ4_MAX)
        self.assertEqual(len(lz4_decode(lz4_periodic(b"ab", total=PAGE - 1)[0])), PAGE - 1)
        self.assertEqual(len(lz4_decode(lz4_literals(b"x" * 100))), 100)
        with self.assertRaises(ValueError):
            lz4_decode(lz4_periodic(b"ab", total=PAGE + 1)[0])

    def run_digest_session(self, batches, pages):
        """Sends batches and a final END_OF_ROUND, then a DIGEST of zero bytes: the destination
        must refuse it and print its own digest of guest memory, which is returned."""
        d = self.dest()
        c = self.source(d)
        self.assertEqual(c.features, F_LZ4)
        for b in batches:
            c.batch(b)
        c.end_of_round(0, pages, final=True)
        c.send(DIGEST, mig.MigDigest(xxh3_128=bytes(16), mem_size=MEM))
        err = self.refused(d, c, "memory digest differs")
        # The refusal reaches the source too, as an ERROR record with the reason.
        self.assertTrue(any("memory digest differs" in e.message for e in c.errors), c.errors)
        return self.digest_here(err)

    def test_01_pages_of_every_encoding_land_in_guest_memory(self):
        """The destination's memory digest proves the evil source's batches right: RAW pages
        and the same pages as hand-made lz4 blocks give the same memory, a RAW page zeroed
        again by a ZERO marker is as if never sent, the last page frame is accepted, and
        any page sent at all changes the digest."""
        lz_a, page_a = lz4_periodic(b"godwit!")
        lz_b, page_b = lz4_periodic(b"\x01\x02\x03")
        junk = pattern_page(7)
        last = NPAGES - 1
        raw = self.run_digest_session(
            [[(5, RAW, page_a), (6, RAW, junk), (9, ZERO, b""), (last, RAW, page_b)],
             [(6, ZERO, b""), (1000, ZERO, b"")]], 6)
        lz4 = self.run_digest_session([[(last, LZ4, lz_b), (5, LZ4, lz_a)]], 2)
        empty = self.run_digest_session([], 0)
        self.assertEqual(raw, lz4)
        self.assertNotEqual(raw, empty)

    def test_02_clean_hangup_is_only_a_hangup(self):
        """A well-formed session (RAW, ZERO and LZ4 pages, END_OF_ROUND) that just ends: the
        destination discards it and says the source went away, nothing else."""
        d = self.dest()
        c = self.source(d)
        lz, _ = lz4_periodic(b"xyz")
        c.batch([(0, RAW, pattern_page(1)), (1, ZERO, b""), (2, LZ4, lz)])
        c.batch([(NPAGES - 1, RAW, pattern_page(2))])
        c.end_of_round(0, 4)
        time.sleep(0.3)            # the records are taken before the hang-up
        err = self.refused(d, c, "migration aborted: stream 0: the connection to the source ended before COMMIT",
                           close_first=True)
        for word in ("PAGE_BATCH", "lz4", "outside", "unexpected", "unknown", "mid-record", "over the"):
            self.assertNotIn(word, err)

    # ---------------------------------------------------------- page batches
    def bad_batch(self, pages, expect, good_first=True):
        d = self.dest()
        c = self.source(d)
        if good_first:             # a good batch first: the bad one is not simply the first record
            c.batch([(3, RAW, pattern_page(3))])
        seq = c.seq                # the record's sequence number (HELLO and AUTH were 0 and 1)
        c.batch(pages)
        return self.refused(d, c, ["stream 0: bad PAGE_BATCH #%d" % seq] + expect)

    # Every lz4 failure has its own words, apart from other malformed batches.
    LZ4_BAD = "corrupt lz4 block"

    def test_10_lz4_garbage(self):
        garbage = bytes((i * 37 + 11) % 256 for i in range(300)) + b"\xff" * 20
        with self.assertRaises((ValueError, IndexError)):
            lz4_decode(garbage)
        self.bad_batch([(4, LZ4, garbage)], [self.LZ4_BAD])

    def test_11_lz4_match_before_the_page(self):
        """A match that reaches 16 bytes before the start of the page: the decoder must not
        read the neighbouring guest page (or anything else) into it."""
        block = bytes([0x4F]) + b"abcd" + struct.pack("<H", 20) + _lz4_len(4096 - 4 - 5 - 4) + bytes([0x50]) + b"abcde"
        with self.assertRaises(ValueError):
            lz4_decode(block)
        self.bad_batch([(4, LZ4, block)], [self.LZ4_BAD])

    def test_12_lz4_short_page(self):
        """Valid lz4 blocks that decode to less than a page: a literal run of 100 bytes, and a
        block one byte short."""
        self.bad_batch([(4, LZ4, lz4_literals(b"L" * 100))], [self.LZ4_BAD])
        self.bad_batch([(4, LZ4, lz4_periodic(b"ab", total=PAGE - 1)[0])], [self.LZ4_BAD])

    def test_13_lz4_longer_than_a_page(self):
        self.bad_batch([(4, LZ4, lz4_periodic(b"ab", total=PAGE + 1)[0])], [self.LZ4_BAD])

    def test_14_pfn_outside_guest_memory(self):
        for pfn in (NPAGES, 2 ** 52, 2 ** 64 - 1):   # 2**52 * 4096 wraps to 0
            with self.subTest(pfn=pfn):
                self.bad_batch([(10, RAW, pattern_page(10)), (pfn, RAW, pattern_page(11))],
                               ["page frame number outside guest memory"])
        # A ZERO marker is a write too.
        self.bad_batch([(2 ** 64 - 1, ZERO, b"")], ["page frame number outside guest memory"], good_first=False)

    def test_15_batch_table_lies(self):
        """Descriptor tables that do not add up: a RAW page with a short length, data past the
        payload, trailing bytes, a bad encoding, a non-zero pad, too many pages."""
        page = pattern_page(12)
        cases = {
            "raw-short": page_batch([(1, RAW, page[:100])]),
            "past-payload": page_batch([(1, RAW, page)])[:-1],
            "trailing": page_batch([(1, RAW, page)]) + b"x",
            "encoding-3": page_batch([(1, RAW, page)]).replace(struct.pack("<QB", 1, RAW), struct.pack("<QB", 1, 3)),
            "pad": page_batch([(1, ZERO, b"")])[:17] + b"\x01" + page_batch([(1, ZERO, b"")])[18:],
            "count-4097": struct.pack("<II", 4097, 0) + struct.pack("<QB3xI", 1, ZERO, 0) * 4097,
            "count-0": struct.pack("<II", 0, 0),
        }
        for name, payload in cases.items():
            with self.subTest(case=name):
                d = self.dest()
                c = self.source(d)
                c.send(PAGE_BATCH, payload)
                self.refused(d, c, ["stream 0: bad PAGE_BATCH #2", "malformed record"])

    # ---------------------------------------------------------- framing
    def test_20_truncated_batch(self):
        """A PAGE_BATCH header announcing a full batch, then the hang-up after part of it."""
        d = self.dest()
        c = self.source(d)
        payload = page_batch([(i, RAW, pattern_page(i)) for i in range(8)])
        c.send_raw(c.header(PAGE_BATCH, len(payload)) + payload[:5000])
        time.sleep(0.3)
        self.refused(d, c, ["peer hung up mid-record (5000 of %d PAGE_BATCH payload bytes)" % len(payload)],
                     close_first=True)

    def test_21_truncated_header(self):
        d = self.dest()
        c = self.source(d)
        c.send_raw(c.header(PAGE_BATCH, 100)[:10])
        time.sleep(0.3)
        self.refused(d, c, ["peer hung up mid-record (10 of 24 header bytes)"], close_first=True)

    def test_22_oversized_record(self):
        """A length over 16 MiB + 64 KiB is refused from the header alone: no payload follows."""
        for rtype in (PAGE_BATCH, STATE):
            with self.subTest(type=rtype):
                d = self.dest()
                c = self.source(d)
                c.send_raw(c.header(rtype, MAX_PAYLOAD + 1))
                self.refused(d, c, ["record length %d over the maximum %d" % (MAX_PAYLOAD + 1, MAX_PAYLOAD)])

    @gwtest.no_vm
    def test_23_oversized_hello_before_authentication(self):
        """A stranger gets no 16 MiB buffers: before AUTH, 64 KiB is the limit."""
        d = self.dest()
        c = self.source(d, handshake=False)
        c.send_raw(c.header(HELLO, MAX_HANDSHAKE_PAYLOAD + 1))
        self.refused(d, c, ["HELLO record length %d over the limit %d here" % (MAX_HANDSHAKE_PAYLOAD + 1,
                                                                              MAX_HANDSHAKE_PAYLOAD)])

    def test_24_unknown_record_type(self):
        # 16 is POSTCOPY (postcopy/pc_wire.h): known, but refused in a pre-copy session.
        d = self.dest()
        c = self.source(d)
        c.send(16, b"\x08\x01")
        self.refused(d, c, ["unexpected record POSTCOPY"])
        # 17 is RDMA_REGIONS (the destination's registered memory): never from a source.
        d = self.dest()
        c = self.source(d)
        c.send(17, b"\x0a\x02\x08\x00")
        self.refused(d, c, ["unexpected record RDMA_REGIONS"])
        for rtype in (18, 255, 0):
            with self.subTest(type=rtype):
                d = self.dest()
                c = self.source(d)
                c.send(rtype, b"\x08\x01")
                self.refused(d, c, ["unknown record type %d" % rtype])

    def test_24b_pages_claimed_written_in_place_over_tcp(self):
        """RDMA WRITE is never granted on TCP, and a batch that claims pages were written into
        place (encoding 3, GW_PAGE_PLACED) is refused: nothing registered memory for the source."""
        d = self.dest()
        c = self.source(d, features=F_LZ4 | F_RDMA_WRITE)
        self.assertEqual(c.features, F_LZ4)
        c.batch([(1, 3, b""), (2, 3, b"")])
        self.refused(d, c, ["page 1 is marked written in place", "registered no memory"])

    def test_25_bad_header_fields(self):
        cases = [
            ({"magic": 0x314D5748}, "bad record header (magic 314d5748 flags 0 reserved 0)"),
            ({"flags": 1}, "bad record header (magic 314d5747 flags 1 reserved 0)"),
            ({"reserved": 7}, "bad record header (magic 314d5747 flags 0 reserved 7)"),
            ({"stream": 1}, "record for stream 1 on stream 0"),
            ({"seq": 5}, "record sequence 5, expected 2"),   # HELLO and AUTH were 0 and 1
        ]
        for fields, expect in cases:
            with self.subTest(fields=fields):
                d = self.dest()
                c = self.source(d)
                c.send(END_OF_ROUND, mig.MigEndOfRound(round=0, pages=0), **fields)
                self.refused(d, c, [expect])

    # ---------------------------------------------------------- handshake
    @gwtest.no_vm
    def test_30_wrong_secret(self):
        d = self.dest()
        c = self.source(d, handshake=False)
        c.hello()
        c.challenge()
        c.send(AUTH, mig.MigAuth(mac=mac(b"not-the-cluster-secret", ROLE_SRC, c.nonce_s, c.nonce_d)))
        # The destination answers ERROR(-EACCES), never its own AUTH (that would be a MAC
        # oracle for a stranger).
        rtype, payload = c.recv()
        self.assertEqual(rtype, ERROR)
        e = mig.MigError.FromString(payload)
        self.assertEqual(e.code, -EACCES)
        self.assertEqual(e.message, "authentication failed")
        self.refused(d, c, ["authentication failed", "does not hold our cluster secret"])

    @gwtest.no_vm
    def test_31_reflected_and_replayed_macs(self):
        """Without the secret: the destination's role (reflection) or a MAC over other nonces
        (replay of an old session) is refused just the same."""
        for name in ("reflect-role", "replay"):
            with self.subTest(case=name):
                d = self.dest()
                c = self.source(d, handshake=False)
                c.hello()
                c.challenge()
                if name == "reflect-role":
                    m = mac(SECRET, ROLE_DST, c.nonce_s, c.nonce_d)
                else:
                    m = mac(SECRET, ROLE_SRC, c.nonce_s, os.urandom(32))
                c.send(AUTH, mig.MigAuth(mac=m))
                self.refused(d, c, ["authentication failed"])
                self.assertEqual([(e.code, e.message) for e in c.errors], [(-EACCES, "authentication failed")])

    @gwtest.no_vm
    def test_32_records_before_authentication(self):
        """Pages instead of AUTH: nothing is applied before the peer proved the secret."""
        d = self.dest()
        c = self.source(d, handshake=False)
        c.hello()
        c.challenge()
        c.batch([(0, RAW, pattern_page(0))])
        self.refused(d, c, ["expected AUTH, got PAGE_BATCH"])

    @gwtest.no_vm
    def test_33_hello_disagrees_with_its_config(self):
        for name, kw, expect in (
                ("mem-size", {"mem_size": MEM, "config": vm_config(2 * MEM)},
                 "the source announced %d bytes of memory but a stream of %d" % (2 * MEM, MEM)),
                ("huge", {"mem_size": 1 << 40, "config": vm_config(1 << 40)},
                 "the source announced 1024 GiB of memory, more than the 64 GiB this host takes"),
                ("odd-size", {"mem_size": MEM + 4096, "config": vm_config(MEM + 4096)},
                 "cannot create the VM here")):
            with self.subTest(case=name):
                d = self.dest()
                c = self.source(d, **kw)
                self.refused(d, c, [expect])
                self.assertTrue(c.errors and expect in c.errors[0].message, c.errors)

    # ---------------------------------------------------------- commit protocol
    def test_40_commit_before_the_final_round(self):
        d = self.dest()
        c = self.source(d)
        c.batch([(0, RAW, pattern_page(0))])
        c.end_of_round(0, 1)
        c.send(COMMIT, mig.MigCommit(rounds=1))
        self.refused(d, c, ["unexpected record COMMIT before the final round"])

    def test_41_commit_before_state_and_digest(self):
        d = self.dest()
        c = self.source(d)
        c.batch([(0, RAW, pattern_page(0))])
        c.end_of_round(0, 1, final=True)
        c.send(COMMIT, mig.MigCommit(rounds=1))
        self.refused(d, c, ["COMMIT before the VM state"])
        self.assertTrue(any("COMMIT before the VM state" in e.message for e in c.errors), c.errors)

    def test_42_go_without_commit(self):
        d = self.dest()
        c = self.source(d)
        c.batch([(0, RAW, pattern_page(0))])
        c.end_of_round(0, 1, final=True)
        c.send(GO, mig.MigGo(rounds=1))
        self.refused(d, c, ["unexpected record GO before ACK"])

    def test_43_go_first(self):
        d = self.dest()
        c = self.source(d)
        c.send(GO, mig.MigGo(rounds=0))
        self.refused(d, c, ["unexpected record GO before ACK"])

    def test_44_pages_after_the_final_round(self):
        d = self.dest()
        c = self.source(d)
        c.end_of_round(0, 0, final=True)
        c.batch([(0, RAW, pattern_page(0))])
        self.refused(d, c, ["unexpected record PAGE_BATCH after the final round"])

    def test_45_round_page_count_lies(self):
        d = self.dest()
        c = self.source(d)
        c.batch([(0, RAW, pattern_page(0)), (1, ZERO, b"")])
        c.end_of_round(0, 5)
        self.refused(d, c, ["round 0: source sent 5 pages, 2 arrived"])

    def test_46_destination_records_from_the_source(self):
        """Records only a destination sends (CHALLENGE, ACK, RUNNING) and a second HELLO."""
        for rtype, name in ((CHALLENGE, "CHALLENGE"), (ACK, "ACK"), (RUNNING, "RUNNING"), (HELLO, "HELLO")):
            with self.subTest(type=name):
                d = self.dest()
                c = self.source(d)
                c.send(rtype, b"")
                self.refused(d, c, ["unexpected record %s" % name])

    def test_47_digest_of_another_size(self):
        d = self.dest()
        c = self.source(d)
        c.end_of_round(0, 0, final=True)
        c.send(DIGEST, mig.MigDigest(xxh3_128=bytes(16), mem_size=2 * MEM))
        self.refused(d, c, ["DIGEST covers a different memory size"])

    @gwtest.no_vm
    def test_48_streams_of_another_session(self):
        """A session of two streams whose second connection lies: another session id, a second
        stream 0, a stream 1 announcing other memory; and a session that starts with stream 1."""
        for name, kw, expect in (
                ("session", {"session": b"S" * 16}, "a connection for another session (or a duplicate stream"),
                ("duplicate-0", {"stream": 0}, "a connection for another session (or a duplicate stream 0)"),
                ("mem-size", {"mem_size": 2 * MEM}, "a connection for another session (or a duplicate stream 1)")):
            with self.subTest(case=name):
                d = self.dest()
                c0 = self.source(d, handshake=False)
                c0.handshake(nstreams=2, session=b"A" * 16)
                c1 = EvilSource(d.port, stream=kw.pop("stream", 1))
                self.conns.append(c1)
                c1.hello(nstreams=2, session=kw.pop("session", b"A" * 16), **kw)
                c1.challenge()
                c1.send(AUTH, mig.MigAuth(mac=mac(SECRET, ROLE_SRC, c1.nonce_s, c1.nonce_d)))
                c1.drain(timeout=5)
                self.assertIn("stream does not belong to this session", [e.message for e in c1.errors])
                self.refused(d, c0, [expect])
        d = self.dest()
        c = self.source(d, handshake=False)
        c.stream = 1
        c.handshake(nstreams=2)
        self.refused(d, c, ["first connection is stream 1, not 0"])

    def test_49_control_records_on_stream_1(self):
        d = self.dest()
        c0 = self.source(d, handshake=False)
        c0.handshake(nstreams=2, session=b"B" * 16)
        c1 = EvilSource(d.port, stream=1)
        self.conns.append(c1)
        c1.handshake(nstreams=2, session=b"B" * 16)
        c1.send(STATE, state.VmState())
        self.refused(d, c1, ["stream 1: STATE is only allowed on stream 0"])

    def test_50_garbage_state(self):
        """A STATE that is not a VmState, then DIGEST and COMMIT as if all were well."""
        garbage = b"\x12\xff\xff\xff\x0f" + b"not a VmState at all" * 4
        with self.assertRaises(Exception):
            state.VmState.FromString(garbage)
        d = self.dest()
        c = self.source(d)
        c.batch([(0, RAW, pattern_page(0))])
        c.end_of_round(0, 1, final=True)
        c.send(STATE, garbage)
        c.send(DIGEST, mig.MigDigest(xxh3_128=bytes(16), mem_size=MEM))
        c.send(COMMIT, mig.MigCommit(rounds=1))
        # (Whether its ERROR record reaches us is a race here: DIGEST and COMMIT may still be
        # unread when it closes, and the kernel then resets the connection.)
        self.refused(d, c, ["the VM state does not decode"])

    def test_51_state_for_another_vm(self):
        """A VmState that decodes but does not fit: empty, and one for a bigger VM."""
        for name, st, expect in (
                ("empty", state.VmState(), "state format 0 is not readable"),
                ("bigger", state.VmState(format_version=100, config=vm_config(2 * MEM)),
                 "state is for a VM of %d bytes and 1 vcpus, this VM has %d and 1" % (2 * MEM, MEM))):
            with self.subTest(case=name):
                d = self.dest()
                c = self.source(d)
                c.end_of_round(0, 0, final=True)
                c.send(STATE, st)
                self.refused(d, c, ["the VM state does not load here: " + expect])


# ----------------------------------------------------------------- the two-phase commit
SNAP_HEADER = struct.Struct("<8sIIQQQQQQQQ")   # engine/vm/snapshot_file.c struct snap_header


def read_snapshot(path):
    """The VmState bytes and the non-zero pages of a `godwit-vm save` file."""
    with open(path, "rb") as f:
        (magic, version, header_size, state_off, state_len, mem_off, mem_size, _, _, _, _) = \
            SNAP_HEADER.unpack(f.read(SNAP_HEADER.size))
        assert magic == b"GODWITSN" and version == 1, (magic, version)
        f.seek(state_off)
        st = f.read(state_len)
        f.seek(mem_off)
        mem = f.read(mem_size)
    assert len(mem) == mem_size == MEM
    zero = bytes(PAGE)
    pages = [(i, mem[i * PAGE:(i + 1) * PAGE]) for i in range(NPAGES) if mem[i * PAGE:(i + 1) * PAGE] != zero]
    return st, pages


class Commit(EvilSourceTest):
    """The evil source replays a real VM (memory and state from `godwit-vm save`) far enough to
    be trusted: memory, state and digest check out and the destination answers COMMIT with
    READY. From there, every deviation must make it discard the copy, and a correct GO must
    make it run the guest (the positive control of the whole protocol)."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="godwit-hostile-commit-")
        sock = os.path.join(cls.dir, "src.sock")
        # An absolute path: `godwit-vm save` hands the runner a dangling pointer for a relative
        # --file (engine/runner/main.c), and the snapshot lands under a garbage name.
        snap = os.path.join(cls.dir, "victim.snap")
        src = subprocess.Popen([VM, "run", "--name", "victim", "--memory", "64M", "--vcpus", "1", "--guest",
                                "idle:ws=4M", "--control", sock, "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert gwtest.wait_for_path(sock), "source runner did not start"
            end = time.time() + 60
            while time.time() < end:
                r = gwtest.run([VM, "status", "--control", sock, "--json"], timeout=10)
                if r.returncode == 0 and gwtest.last_json(r.stdout).get("guest_ready"):
                    break
                time.sleep(0.1)
            r = gwtest.run([VM, "save", "--control", sock, "--file", snap, "--stop", "--json"], timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr
            src.communicate(timeout=30)
        finally:
            if src.poll() is None:
                src.kill()
                src.communicate()
        cls.state, cls.pages = read_snapshot(snap)
        assert cls.pages, "the snapshot holds no data"
        cls.digest = None

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def transfer(self, digest):
        """Handshake, all pages (one round, 1024-page batches), the final END_OF_ROUND, STATE and
        DIGEST."""
        d = self.dest()
        c = self.source(d)
        for i in range(0, len(self.pages), 1024):
            c.batch([(pfn, RAW, data) for pfn, data in self.pages[i:i + 1024]])
        c.end_of_round(0, len(self.pages), final=True)
        c.send(STATE, self.state)
        c.send(DIGEST, mig.MigDigest(xxh3_128=digest, mem_size=MEM))
        return d, c

    def learn_digest(self):
        """The destination prints its digest of the memory it got when ours differs; the same
        pages give the same memory, so later sessions can send the right one."""
        if self.__class__.digest is None:
            d, c = self.transfer(bytes(16))
            self.__class__.digest = bytes.fromhex(self.digest_here(self.refused(d, c, "memory digest differs")))
        return self.digest

    def ready(self):
        """A session brought to READY: COMMIT answered with ACK(acked_type COMMIT)."""
        d, c = self.transfer(self.learn_digest())
        c.send(COMMIT, mig.MigCommit(rounds=1))
        rtype, payload = c.recv()
        self.assertEqual(rtype, ACK, c.errors)
        self.assertEqual(mig.MigAck.FromString(payload).acked_type, COMMIT)
        return d, c

    def test_70_go_runs_the_guest(self):
        """Positive control: GO(rounds of the COMMIT) and the destination runs the replayed guest,
        which finds its memory intact. After RUNNING the guest is the destination's: a second
        GO and garbage from the source change nothing."""
        d, c = self.ready()
        c.send(GO, mig.MigGo(rounds=1))
        rtype, payload = c.recv()
        self.assertEqual(rtype, RUNNING)
        self.assertEqual(mig.MigRunning.FromString(payload).acked_type, GO)
        c.send(GO, mig.MigGo(rounds=1))
        c.send(77, b"junk")
        c.close()
        code, out, err = d.finish(timeout=20)
        self.assertEqual(code, 0, err)
        final = gwtest.last_json(out)
        self.assertEqual(final["status"], "ok", final)
        self.assertEqual(final["guest_verify_errors"], 0, final)
        self.assertGreater(final["guest_pages_verified"], 0, final)
        self.assertTrue(d.sock_seen)      # the watcher of the hostile cases does see a VM

    def test_71_go_with_other_rounds(self):
        d, c = self.ready()
        c.send(GO, mig.MigGo(rounds=2))
        self.refused(d, c, ["GO for 2 rounds, COMMIT had 1"], acked=True)

    def test_72_pages_after_commit(self):
        d, c = self.ready()
        c.batch([(0, ZERO, b"")])
        self.refused(d, c, ["unexpected record PAGE_BATCH after COMMIT"], acked=True)

    def test_73_commit_twice(self):
        d, c = self.ready()
        c.send(COMMIT, mig.MigCommit(rounds=1))
        self.refused(d, c, ["unexpected record COMMIT after COMMIT"], acked=True)

    def test_74_hangup_after_ready(self):
        d, c = self.ready()
        time.sleep(0.2)
        self.refused(d, c, ["the connection to the source ended after COMMIT, before GO (discard this copy)"],
                       close_first=True, acked=True)

    def test_75_source_error_after_ready(self):
        d, c = self.ready()
        c.send(ERROR, mig.MigError(code=-125, message="evil source changed its mind"))
        self.refused(d, c, ["source aborted the migration: evil source changed its mind"], acked=True)

    # A DIGEST sent before the final round, then more pages: the destination must not vouch
    # for memory its digest never covered (this once got READY and RUNNING; now refused).
    def test_76_pages_after_an_early_digest(self):
        digest = self.learn_digest()
        d = self.dest()
        c = self.source(d)
        for i in range(0, len(self.pages), 1024):
            c.batch([(pfn, RAW, data) for pfn, data in self.pages[i:i + 1024]])
        c.end_of_round(0, len(self.pages))                  # not final
        c.send(STATE, self.state)
        c.send(DIGEST, mig.MigDigest(xxh3_128=digest, mem_size=MEM))
        time.sleep(0.2)                                      # the digest is checked: equal
        c.batch([(pfn, RAW, pattern_page(pfn)) for pfn, _ in self.pages[:64]])
        c.end_of_round(1, 64, final=True)
        c.send(COMMIT, mig.MigCommit(rounds=2))
        try:
            rtype = c.recv()[0]
        except (PeerClosed, OSError):
            rtype = None
        self.assertNotEqual(rtype, ACK, "READY for memory that changed after its digest was checked")
        self.refused(d, c, ["DIGEST before the final round"])


# ----------------------------------------------------------------- the evil destination
class EvilDestination(unittest.TestCase):
    """A real source runner migrating to a destination that cannot prove the secret."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="godwit-hostile-src-")
        self.secret = os.path.join(self.dir, "secret")
        with open(self.secret, "wb") as f:
            f.write(SECRET + b"\n")
        self.sock = os.path.join(self.dir, "src.sock")
        self.src = subprocess.Popen([VM, "run", "--name", "victim", "--memory", "64M", "--vcpus", "1",
                                     "--guest", "idle:ws=4M", "--control", self.sock, "--secret-file", self.secret,
                                     "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertTrue(gwtest.wait_for_path(self.sock), "source runner did not start")
        end = time.time() + 60
        while time.time() < end:
            st = self.status()
            if st and st.get("guest_ready"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("guest never became ready")

    def tearDown(self):
        if self.src.poll() is None:
            self.src.kill()
            self.src.communicate()
        shutil.rmtree(self.dir, ignore_errors=True)

    def status(self):
        r = gwtest.run([VM, "status", "--control", self.sock, "--json"], timeout=10)
        return gwtest.last_json(r.stdout) if r.returncode == 0 else None

    def serve(self, answer):
        """One evil destination: accepts connections, plays CHALLENGE, checks the source's AUTH
        (the real source must prove the secret as documented) and answers with answer(conn)."""
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(8)
        ls.settimeout(30)
        seen = {"hellos": [], "auth_ok": [], "after": [], "hung_up": [], "threads": []}

        def one(s):
            c = EvilSource(sock=s)      # --streams 1: stream 0 only
            pre = b""
            while len(pre) < 48:
                chunk = s.recv(48 - len(pre))
                assert chunk, "closed before the preamble"
                pre += chunk
            assert pre[:6] == b"GWPR\x01\x00" and pre[8:12] == b"\x00\x00\x01\x00", pre   # plaintext, stream 0 of 1
            rtype, payload = c.recv()
            assert rtype == HELLO, rtype
            h = mig.MigHello.FromString(payload)
            seen["hellos"].append(h)
            nonce_d = os.urandom(32)
            c.send(CHALLENGE, mig.MigChallenge(version=WIRE_VERSION, features=h.features & F_LZ4, nonce=nonce_d))
            rtype, payload = c.recv()
            src_mac = mig.MigAuth.FromString(payload).mac if rtype == AUTH else b""
            seen["auth_ok"].append(hmac.compare_digest(src_mac, mac(SECRET, ROLE_SRC, h.nonce, nonce_d)))
            c.send(AUTH, mig.MigAuth(mac=answer(h.nonce, nonce_d, src_mac)))
            try:                      # whatever the source does next: it must hang up
                while True:
                    seen["after"].append(c.recv()[0])
            except PeerClosed:
                seen["hung_up"].append(True)
            except (OSError, AssertionError):
                seen["hung_up"].append(False)
            s.close()

        def loop():
            try:
                while True:
                    s, _ = ls.accept()
                    t = threading.Thread(target=one, args=(s,), daemon=True)
                    seen["threads"].append(t)
                    t.start()
            except OSError:
                pass

        threading.Thread(target=loop, daemon=True).start()
        return ls, seen

    def attack(self, answer):
        ls, seen = self.serve(answer)
        try:
            r = gwtest.run([VM, "migrate", "--control", self.sock, "--to", "tcp:127.0.0.1:%d" % ls.getsockname()[1],
                            "--streams", "1", "--tls", "off", "--wait", "--json"], timeout=60)
        finally:
            ls.close()
        for t in seen["threads"]:
            t.join(timeout=15)
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        final = gwtest.last_json(r.stdout)
        self.assertEqual(final["phase"], "failed", final)
        self.assertIn("authentication failed", final["migration_error"])
        self.assertIn("does not hold our cluster secret", final["migration_error"])
        self.assertEqual(len(seen["hellos"]), 1)
        h = seen["hellos"][0]
        self.assertEqual((h.version, h.stream_index, h.nstreams, h.mem_size), (WIRE_VERSION, 0, 1, MEM))
        self.assertEqual(len(h.nonce), 32)
        self.assertEqual(len(h.session_id), 16)
        self.assertEqual(h.config.memory_bytes, MEM)
        self.assertEqual([(g.gpa, g.size, g.offset) for g in h.config.regions], [(0, MEM, 0)])
        self.assertEqual(seen["auth_ok"], [True])          # the source proved the secret as documented
        # and then sent no guest memory (nor anything but a reason) to the stranger
        self.assertTrue(set(seen["after"]) <= {ERROR}, seen["after"])
        self.assertEqual(seen["hung_up"], [True])
        # The VM runs on at the source.
        st = self.status()
        self.assertEqual(st["state"], "running", st)
        self.assertEqual(st["guest_verify_errors"], 0)
        a = st["guest_pages_verified"]
        time.sleep(0.5)
        self.assertGreater(self.status()["guest_pages_verified"], a)
        return final

    def test_60_wrong_auth_from_destination(self):
        self.attack(lambda ns, nd, src_mac: mac(b"a-different-cluster-secret", ROLE_DST, ns, nd))

    def test_61_reflected_auth_from_destination(self):
        """A destination without the secret echoes the source's own MAC: the role byte stops it."""
        self.attack(lambda ns, nd, src_mac: src_mac)
        # A second attempt, against a MAC of zeros, fails the same way: the first left nothing behind.
        self.attack(lambda ns, nd, src_mac: bytes(32))


def tearDownModule():
    shutil.rmtree(_PB_DIR, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(gwtest.run_tests())
