#!/usr/bin/env python3
"""A stand-in for the botsync CLI, to test the harness before the real one exists.

It implements just the verbs ``botsync.json`` uses, with the same arguments,
so ``run.py --botsync-bin benches/e2e/fake_botsync.py`` exercises the whole
botsync pipeline (identities, peers, config, a UDP daemon, a push that
returns when the destination holds the source's tree, memory and byte
probes). Its numbers mean nothing: it copies files on the local disk and
only control messages cross UDP. Never report them as botsync's.

    fake_botsync.py -w WS init --name NAME
    fake_botsync.py -w WS id
    fake_botsync.py -w WS add PEER HOST:PORT --id PEER_ID
    fake_botsync.py -w WS serve --listen HOST:PORT
    fake_botsync.py -w WS push PEER
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import sys
from pathlib import Path

STATE = ".botsync"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fake_botsync")
    p.add_argument("--version", action="version", version="fake_botsync: harness test double, its numbers mean nothing")
    p.add_argument("-w", "--workspace", type=Path)
    sub = p.add_subparsers(dest="verb", required=True)
    init = sub.add_parser("init")
    init.add_argument("--name", default="fake")
    sub.add_parser("id")
    add = sub.add_parser("add")
    add.add_argument("peer")
    add.add_argument("address")
    add.add_argument("--id", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--listen", required=True)
    push = sub.add_parser("push")
    push.add_argument("peer")
    sub.add_parser("check")
    args = p.parse_args(argv)
    if args.workspace is None:
        p.error("-w WORKSPACE is required")
    ws: Path = args.workspace
    state = ws / STATE

    if args.verb == "init":
        state.mkdir(parents=True, exist_ok=True)
        (state / "id").write_text(secrets.token_hex(16) + "\n")
        (state / "config.json").write_text(json.dumps({"name": args.name}) + "\n")
        (state / "peers.json").write_text("{}\n")
    elif args.verb == "id":
        print((state / "id").read_text().strip())
    elif args.verb == "add":
        peers = json.loads((state / "peers.json").read_text())
        peers[args.peer] = {"address": args.address, "id": args.id}
        (state / "peers.json").write_text(json.dumps(peers) + "\n")
    elif args.verb == "serve":
        return serve_forever(ws, args.listen)
    elif args.verb == "check":
        # The real verb is a dry-run pull; the double has nothing to pull from.
        return 0 if (state / "peers.json").is_file() else 1
    elif args.verb == "push":
        peers = json.loads((state / "peers.json").read_text())
        if args.peer not in peers:
            print(f"fake_botsync: unknown peer {args.peer}", file=sys.stderr)
            return 2
        host, port = peers[args.peer]["address"].rsplit(":", 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(600)
            sock.sendto(f"PUSH {ws.resolve()}".encode(), (host, int(port)))
            reply, _ = sock.recvfrom(65536)
        if reply != b"DONE":
            print(f"fake_botsync: push failed: {reply.decode(errors='replace')}", file=sys.stderr)
            return 1
    return 0


def serve_forever(ws: Path, listen: str) -> int:
    """Answer ``PUSH <dir>`` by mirroring that directory into ``ws``."""
    host, port = listen.rsplit(":", 1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, int(port)))
        while True:
            msg, peer = sock.recvfrom(65536)
            verb, _, arg = msg.decode().partition(" ")
            if verb != "PUSH":
                sock.sendto(b"ERR unknown verb", peer)
                continue
            try:
                mirror(Path(arg), ws)
                sock.sendto(b"DONE", peer)
            except OSError as err:
                sock.sendto(f"ERR {err}".encode(), peer)


def mirror(src: Path, dst: Path) -> None:
    """Make ``dst`` hold ``src``'s files (size+mtime check), both ``.botsync/`` excluded."""
    wanted = set()
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if not (Path(root) == src and d == STATE)]
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        wanted.add(rel)
        for name in files:
            a, b = Path(root) / name, dst / rel / name
            wanted.add(rel / name)
            sa = a.stat()
            try:
                sb = b.stat()
                if sb.st_size == sa.st_size and sb.st_mtime_ns == sa.st_mtime_ns:
                    continue
            except FileNotFoundError:
                pass
            shutil.copy2(a, b)
    for root, _dirs, files in os.walk(dst, topdown=False):
        rel = Path(root).relative_to(dst)
        if rel.parts[:1] == (STATE,):
            continue
        for name in files:
            if rel / name not in wanted:
                (Path(root) / name).unlink()
        if rel != Path(".") and rel not in wanted:
            Path(root).rmdir()


if __name__ == "__main__":
    sys.exit(main())
