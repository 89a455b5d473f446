"""Host side of the net-echo guest (guest/workload_net.c): a multi-queue tap made for the
test, and an echo client speaking the frame format of guest/abi.h over an AF_PACKET socket
bound to the tap. Used by test_net.py."""
import os
import random
import select
import socket
import struct
import subprocess
import threading
import time

ETHERTYPE = 0x88B5
ETH_P_ALL = 0x0003
ETH_P_RARP = 0x8035
REQUEST = 0x51455747   # "GWEQ"
REPLY = 0x50455747     # "GWEP"
HOST_MAC = bytes([0x02, 0x47, 0x57, 0x00, 0x00, 0x01])
BROADCAST = b"\xff" * 6


class Tap:
    """A multi-queue tap named for this process, up, IPv6 off (no stray solicitations)."""

    def __init__(self, prefix="gwn"):
        self.name = "%s%d-%d" % (prefix, os.getpid() % 100000, random.randrange(1000))
        self.name = self.name[:15]
        r = subprocess.run(["ip", "tuntap", "add", "dev", self.name, "mode", "tap", "multi_queue"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise PermissionError("cannot create tap %s: %s" % (self.name, r.stderr.strip()))
        try:
            with open("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % self.name, "w") as f:
                f.write("1")
        except OSError:
            pass
        subprocess.run(["ip", "link", "set", self.name, "up"], check=True)

    def close(self):
        subprocess.run(["ip", "link", "del", self.name], capture_output=True)


def request(seq, dst=BROADCAST, pad=46):
    return dst + HOST_MAC + struct.pack("!H", ETHERTYPE) + struct.pack("<IQ", REQUEST, seq) + b"\x5a" * pad


def parse_reply(frame):
    """(seq, guest MAC) of an echo reply addressed to us, else None."""
    if len(frame) < 26 or frame[:6] != HOST_MAC or struct.unpack("!H", frame[12:14])[0] != ETHERTYPE:
        return None
    magic, seq = struct.unpack("<IQ", frame[14:26])
    return (seq, frame[6:12]) if magic == REPLY else None


class Echo:
    """An AF_PACKET socket on the tap: sends requests, collects replies and RARP frames."""

    def __init__(self, ifname):
        self.s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.s.bind((ifname, ETH_P_ALL))
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.rarps = []       # (time, sender MAC)
        self.guest_mac = None

    def close(self):
        self.s.close()

    def _take(self, frame, on_reply):
        if len(frame) >= 14 and struct.unpack("!H", frame[12:14])[0] == ETH_P_RARP:
            self.rarps.append((time.monotonic(), frame[6:12]))
            return
        r = parse_reply(frame)
        if r:
            self.guest_mac = r[1]
            on_reply(r[0])

    def drain(self, on_reply, timeout, done=None):
        end = time.monotonic() + timeout
        while not (done and done()):
            left = end - time.monotonic()
            if left <= 0:
                return
            if not select.select([self.s], [], [], left)[0]:
                return
            frame, addr = self.s.recvfrom(65536)
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            self._take(frame, on_reply)

    def ping(self, seq, timeout=1.0):
        """Round trip of one request in seconds, or None when no reply came in time."""
        got = []
        t0 = time.monotonic()
        self.s.send(request(seq))
        end = t0 + timeout
        while not got and time.monotonic() < end:
            self.drain(lambda q: got.append(q) if q == seq else None, end - time.monotonic(), lambda: got)
        return time.monotonic() - t0 if got else None

    def wait_ready(self, timeout=30.0):
        end = time.monotonic() + timeout
        seq = 1 << 40
        while time.monotonic() < end:
            if self.ping(seq, 0.2) is not None:
                return True
            seq += 1
        return False


class Stream:
    """Numbered requests at a fixed interval from one thread, replies collected by another."""

    def __init__(self, echo, interval_s):
        self.e = echo
        self.interval = interval_s
        self.sent = {}        # seq -> send time
        self.replies = []     # (seq, time) in arrival order
        self.stop = threading.Event()
        self.tx = threading.Thread(target=self._send)
        self.rx = threading.Thread(target=self._recv)

    def start(self):
        self.rx.start()
        self.tx.start()

    def _send(self):
        seq = 0
        nxt = time.monotonic()
        while not self.stop.is_set():
            self.sent[seq] = time.monotonic()
            self.e.s.send(request(seq))
            seq += 1
            nxt += self.interval
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)

    def _recv(self):
        while not self.stop.is_set():
            self.e.drain(lambda q: self.replies.append((q, time.monotonic())), 0.05)

    def finish(self, linger_s=1.0):
        self.stop.set()
        self.tx.join()
        time.sleep(0)
        self.stop.clear()
        end = time.monotonic() + linger_s
        while time.monotonic() < end:
            self.e.drain(lambda q: self.replies.append((q, time.monotonic())), 0.05)
        self.stop.set()
        self.rx.join()

    def report(self, pause=None):
        """frames sent/lost/reordered and how many of the lost frames were sent outside the
        pause: pause=(start, end) in time.monotonic() seconds, or else the longest gap
        between replies."""
        seen = set()
        reordered = 0
        top = -1
        for q, _ in self.replies:
            if q in seen:
                continue
            seen.add(q)
            if q < top:
                reordered += 1
            top = max(top, q)
        lost = sorted(q for q in self.sent if q not in seen)
        if pause is None:
            times = [t for _, t in self.replies]
            pause = (0.0, 0.0)
            for a, b in zip(times, times[1:]):
                if b - a > pause[1] - pause[0]:
                    pause = (a, b)
        # Requests sent a little before the pause began may still be in the source's queue
        # when it stops: they are lost to the pause too.
        slack = max(0.005, 3 * self.interval)
        outside = [q for q in lost if not (pause[0] - slack <= self.sent[q] <= pause[1])]
        self.lost_detail = [(q, round((self.sent[q] - pause[0]) * 1000, 2)) for q in lost[:20]]
        return {"frames_sent": len(self.sent), "frames_answered": len(seen), "frames_lost": len(lost),
                "frames_reordered": reordered, "frames_lost_outside_pause": len(outside)}
