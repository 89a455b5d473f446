#!/usr/bin/env python3
"""Writes a few valid inputs for fuzz_wire_decoder into tests/fuzz/corpus/wire/.
Byte 0 picks the mode (odd: a bare PAGE_BATCH payload, bit 1 adding the receiver's
touched/written bitmaps; even: framed records, split in memory (bit 1 clear) or received
from a socket by the streaming receiver (bit 1 set; bit 2 lets it accept pages written in
place by RDMA))."""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "wire")
MAGIC = 0x314D5747


def record(rtype, payload, stream=0, seq=0):
    return struct.pack("<IBBHIIQ", MAGIC, rtype, 0, 0, len(payload), stream, seq) + payload


def lz4_page():
    # One literal 'A', a 4090-byte match at offset 1, then the 5 literals LZ4 ends with.
    extra = 4090 - 4 - 15
    seq = bytes([0x1F]) + b"A" + struct.pack("<H", 1) + b"\xff" * (extra // 255) + bytes([extra % 255])
    return seq + bytes([0x50]) + b"AAAAA"


def batch(pages):
    desc, data = b"", b""
    for pfn, enc, body in pages:
        desc += struct.pack("<QB3xI", pfn, enc, len(body))
        data += body
    return struct.pack("<II", len(pages), 0) + desc + data


def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def rdma_regions(regions):
    msg = b""
    for stream, off, length, addr, rkey in regions:
        r = (b"\x08" + varint(stream) + b"\x10" + varint(off) + b"\x18" + varint(length)
             + b"\x20" + varint(addr) + b"\x28" + varint(rkey))
        msg += b"\x0a" + varint(len(r)) + r
    return msg


def pc(op, count, a=0, b=0):
    """A post-copy record's 32-byte header (postcopy/pc_wire.h)."""
    return struct.pack("<IIQQQ", op, count, a, b, 0)


def main():
    os.makedirs(OUT, exist_ok=True)
    raw = bytes(range(256)) * 16
    b = batch([(0, 0, raw), (1, 1, b""), (2, 2, lz4_page()), (15, 1, b"")])
    seeds = {
        "batch_bare": b"\x01" + b,
        "batch_record": b"\x00" + record(4, b),
        "eor_record": b"\x00" + record(5, b"\x08\x03\x10\x04\x18\x01", seq=1),
        "digest_record": b"\x00" + record(7, b"\x0a\x10" + b"\x11" * 16 + b"\x10\x80\x80\x04"),
        "error_record": b"\x00" + record(11, b"\x08\x05\x12\x04oops"),
        "two_records": b"\x00" + record(4, batch([(3, 1, b"")])) + record(9, b"", seq=1),
        "batch_bare_fresh": b"\x03" + batch([(4, 1, b""), (4, 0, raw), (4, 1, b""), (5, 1, b"")]),
        "stream_batches": b"\x02" + record(4, b) + record(4, batch([(7, 0, raw), (8, 0, raw), (3, 2, lz4_page())]), seq=1)
                          + record(12, b"\x08\x01", seq=2),
        "stream_repeats": b"\x02" + record(4, batch([(6, 1, b""), (6, 0, raw), (6, 2, lz4_page()), (6, 0, raw)])),
        # RDMA: the destination's regions, and batches naming pages written in place (enc 3)
        # to a receiver that registered memory (mode bit 2).
        "rdma_regions": b"\x00" + record(17, rdma_regions([(0, 0, 8 * 4096, 0x7f0000000000, 7),
                                                            (1, 8 * 4096, 8 * 4096, 0x7f0000008000, 9)])),
        # Post-copy's records: a page request, a DIRTY bitmap, a resume proof.
        "pc_request": b"\x00" + record(16, pc(1, 2) + struct.pack("<QQ", 3, 15)),
        "pc_dirty": b"\x00" + record(16, pc(9, 0, a=100) + struct.pack("<QQ", 0xF0F0, 0x1)),
        "pc_proof": b"\x00" + record(16, pc(12, 0, a=7, b=9) + b"\x5a" * 32),
        "stream_placed": b"\x06" + record(4, batch([(2, 3, b""), (3, 3, b""), (4, 1, b""), (5, 0, raw)])),
    }
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
