#!/usr/bin/env python3
"""A TCP relay between a migration source and its destination, so that a test can break the
link: killing this process closes every connection through it at once, as a broken path
does; starting another on the same port (or elsewhere) gives the source a path again.

    tcp_relay.py LISTEN_PORT TARGET_HOST TARGET_PORT    (port 0: any; prints {"port": N})"""
import json
import socket
import sys
import threading


def pipe(a, b):
    try:
        while True:
            d = a.recv(1 << 16)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def main():
    port, host, tport = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(64)
    print(json.dumps({"port": ls.getsockname()[1]}), flush=True)
    while True:
        c, _ = ls.accept()
        try:
            t = socket.create_connection((host, tport))
        except OSError:
            c.close()
            continue
        for a, b in ((c, t), (t, c)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    main()
