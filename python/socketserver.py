#!/usr/bin/env python3
"""rtest socket server: run rtest workers on this host for a remote rtest.

Single file, standard library only, Python 3.8+. Start it on a host that
has Python (and nothing else), then point rtest at it:

    RTEST_TOKEN=secret python3 socketserver.py --listen 0.0.0.0:8888
    RTEST_TOKEN=secret rtest --tx socket=thishost:8888 --rsyncdir mypkg mypkg

Every connection must prove it knows the shared token (an HMAC-SHA256
challenge; the token never crosses the wire). Peers that fail are logged and
dropped; nothing they send is executed. Without a token the server refuses
to start, unless --insecure-no-token is given and it listens on loopback.

Wire format after authentication: the client sends one JSON line
{"argv": [...], "chdir": ..., "env": {...}}; the server starts that
process and relays its stdin (raw, from the client), and its stdout,
stderr and exit status to the client as frames of one channel byte
(1 stdout, 2 stderr, 3 exit), a 4-byte big-endian length, and the data.
Closing the connection kills the process and everything it started.
"""

import argparse
import hashlib
import hmac
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

VERSION = b"RTEST1"


def log(msg):
    sys.stderr.write("[rtest-socketserver %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def read_line(sock, limit=1 << 20):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
        if len(buf) > limit:
            raise ConnectionError("line too long")
    return buf[:-1]


def send_frame(sock, lock, channel, data):
    with lock:
        sock.sendall(struct.pack(">BI", channel, len(data)) + data)


def serve_client(sock, addr, token):
    try:
        sock.settimeout(30)
        nonce = os.urandom(32).hex().encode()
        sock.sendall(VERSION + b" " + nonce + b"\n")
        answer = read_line(sock, 1024)
        if token is not None:
            want = hmac.new(token, nonce, hashlib.sha256).hexdigest().encode()
            if not hmac.compare_digest(want, answer):
                log("rejected %s:%s: bad token" % addr[:2])
                sock.sendall(b"DENIED\n")
                return
        sock.sendall(b"OK\n")
        request = json.loads(read_line(sock).decode("utf-8"))
        sock.settimeout(None)
    except Exception as exc:
        log("dropped %s:%s: %s" % (addr[:2] + (exc,)))
        return
    argv = request.get("argv") or []
    env = dict(os.environ)
    env.update(request.get("env") or {})
    cwd = request.get("chdir") or None
    if cwd:
        cwd = os.path.expanduser(cwd)
        os.makedirs(cwd, exist_ok=True)
    log("%s:%s runs %s" % (addr[:2] + (argv[0] if argv else "?",)))
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd, env=env, start_new_session=True,
        )
    except Exception as exc:
        lock = threading.Lock()
        send_frame(sock, lock, 2, ("cannot start %r: %s\n" % (argv, exc)).encode())
        send_frame(sock, lock, 3, b"exit code 127")
        sock.close()
        return
    lock = threading.Lock()

    def pump(stream, channel):
        while True:
            data = os.read(stream.fileno(), 65536)
            if not data:
                break
            try:
                send_frame(sock, lock, channel, data)
            except OSError:
                break

    threads = [threading.Thread(target=pump, args=(proc.stdout, 1), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, 2), daemon=True)]
    for t in threads:
        t.start()

    def feed():
        # Client -> process stdin; the connection closing kills the process.
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                proc.stdin.write(data)
                proc.stdin.flush()
        except OSError:
            pass
        kill_group(proc)

    threading.Thread(target=feed, daemon=True).start()
    code = proc.wait()
    for t in threads:
        t.join(2)
    desc = "exit code %d" % code if code >= 0 else "killed by signal %d" % -code
    try:
        send_frame(sock, lock, 3, desc.encode())
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    kill_group(proc)


def kill_group(proc):
    """Kill the process and everything it started (its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


def main():
    ap = argparse.ArgumentParser(description="rtest socket server")
    ap.add_argument("--listen", default="127.0.0.1:8888", help="HOST:PORT (default 127.0.0.1:8888)")
    ap.add_argument("--token-file", help="file holding the shared token (else $RTEST_TOKEN)")
    ap.add_argument("--insecure-no-token", action="store_true", help="accept anyone (loopback only)")
    args = ap.parse_args()
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    token = None
    if args.token_file:
        with open(args.token_file, "rb") as fh:
            token = fh.read().strip()
    elif os.environ.get("RTEST_TOKEN"):
        token = os.environ["RTEST_TOKEN"].encode()
    if not token:
        token = None
        loopback = host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")
        if not args.insecure_no_token:
            sys.exit("rtest socketserver: no token: set RTEST_TOKEN or --token-file (or --insecure-no-token on loopback)")
        if not loopback:
            sys.exit("rtest socketserver: --insecure-no-token is only allowed on a loopback address, not %s" % host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(64)
    log("listening on %s:%s" % (host, srv.getsockname()[1]))
    sys.stdout.write("listening on %s:%d\n" % (host, srv.getsockname()[1]))
    sys.stdout.flush()
    while True:
        conn, addr = srv.accept()
        threading.Thread(target=serve_client, args=(conn, addr, token), daemon=True).start()


if __name__ == "__main__":
    main()
