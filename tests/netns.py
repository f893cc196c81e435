"""Hosts made of Linux network namespaces, for tests/test_many_hosts.py and the benchmark.

Each host is a network namespace joined to this one by a veth pair, with its
own hostname (a UTS namespace per process started in it), so its workers'
names and Worker rows say which host they run on. Taking the host-side end of
the pair down cuts the host off as a pulled cable or a dead switch port would:
its packets go nowhere, and nothing tells either side.

PostgreSQL listens on loopback only and is shared with other test runs, so it
is not reconfigured: a forwarder in this process listens on each host's
address on this side of its link and relays to it. It keeps a partitioned
host's connections open, as a server across a real partition would, until
the host itself gives up on them.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN), ``ip`` (iproute2) and ``unshare``
(util-linux); ``unavailable()`` says why hosts cannot be made here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

#: What sets a host's hostname before its command runs: "$0" is the name, "$@" the command.
_SET_HOSTNAME = 'hostname "$0" && exec "$@"'


def ip(*args: str) -> str:
    """Run ``ip`` and return its output; a failure raises with what ``ip`` said."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def unavailable() -> str | None:
    """Why network namespaces cannot be made here (None: they can)."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux only (this is {sys.platform})"
    for tool in ("ip", "unshare", "hostname"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"sqprobe{secrets.token_hex(3)}"
    try:
        ip("netns", "add", probe)
    except OSError as exc:
        return f"cannot create network namespaces (root is needed): {exc}"
    with contextlib.suppress(OSError):
        ip("netns", "delete", probe)
    return None


@dataclass(frozen=True)
class Host:
    name: str  # its hostname
    netns: str
    veth: str  # the end of its link on this side: down means partitioned
    address: str  # this side's address on its link, where the forwarder listens


def via(url: str, host: Host) -> str:
    """A database URL as ``host`` reaches it: the same server, at this side's address on its link."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{auth}@{host.address}:{parts.port or 5432}"))


class Forwarder:
    """Relays TCP connections from listening addresses to one target, on an event loop thread."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.loop = asyncio.new_event_loop()
        self.servers: list[asyncio.Server] = []
        self.writers: set[asyncio.StreamWriter] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, name="netns-forwarder", daemon=True)
        self.thread.start()

    def listen(self, address: str, port: int) -> None:
        start = asyncio.start_server(self._relay, address, port, reuse_address=True)
        self.servers.append(asyncio.run_coroutine_threadsafe(start, self.loop).result(10))

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self.writers -= {writer, up_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction; its end (EOF or an error) closes the other side, which ends the other one."""
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def close(self) -> None:
        async def shut() -> None:
            for server in self.servers:
                server.close()
            for writer in list(self.writers):
                writer.close()

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Hosts:
    """``count`` hosts with PostgreSQL at ``target`` reachable from each; ``close()`` removes them all."""

    def __init__(self, count: int, target: tuple[str, int]) -> None:
        self.tag = f"sq{secrets.token_hex(3)}"
        self.port = target[1]
        self.hosts: list[Host] = []
        self.forwarder = Forwarder(target)
        try:
            subnet = self._free_subnet()
            for i in range(count):
                self._make(i, f"10.{subnet}.{i}")
        except BaseException:
            self.close()
            raise

    def __iter__(self):
        return iter(self.hosts)

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]

    def __len__(self) -> int:
        return len(self.hosts)

    @staticmethod
    def _free_subnet() -> int:
        """A second octet in 10/8 that no route here uses yet (another run may have its hosts up)."""
        routes = ip("-4", "route", "show", "table", "all")
        free = [n for n in range(100, 250) if f"10.{n}." not in routes]
        return random.choice(free)

    def _make(self, i: int, prefix: str) -> None:
        host = Host(
            name=f"{self.tag}-{chr(ord('a') + i)}",
            netns=f"{self.tag}{i}",
            veth=f"{self.tag}{i}h",
            address=f"{prefix}.1",
        )
        ip("netns", "add", host.netns)
        self.hosts.append(host)  # removed by close() from here on, whatever fails next
        inside = f"{self.tag}{i}n"
        ip("link", "add", host.veth, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", host.netns)
        ip("addr", "add", f"{host.address}/24", "dev", host.veth)
        ip("link", "set", host.veth, "up")
        ip("-n", host.netns, "addr", "add", f"{prefix}.2/24", "dev", inside)
        ip("-n", host.netns, "link", "set", inside, "up")
        ip("-n", host.netns, "link", "set", "lo", "up")
        ip("-n", host.netns, "route", "add", "default", "via", host.address)
        # The gateway's address stays resolved while the link is down, as a router's does when the
        # path beyond it breaks: packets then vanish, rather than failing at once for want of ARP.
        mac = json.loads(ip("-j", "link", "show", host.veth))[0]["address"]
        neighbour = ["neigh", "replace", host.address, "lladdr", mac, "dev", inside, "nud", "permanent"]
        ip("-n", host.netns, *neighbour)
        self.forwarder.listen(host.address, self.port)

    def command(self, host: Host, argv: Sequence[str]) -> list[str]:
        """``argv`` run on ``host``: in its network namespace, under its hostname.

        ``ip netns exec`` and ``unshare`` exec, so the process started is ``argv``'s own.
        """
        return [
            "ip",
            "netns",
            "exec",
            host.netns,
            "unshare",
            "--uts",
            "sh",
            "-c",
            _SET_HOSTNAME,
            host.name,
            *argv,
        ]

    def link(self, host: Host, *, up: bool) -> None:
        ip("link", "set", host.veth, "up" if up else "down")

    def close(self) -> None:
        """Kill what still runs on the hosts, delete them (their links go with them), stop forwarding."""
        for host in self.hosts:
            with contextlib.suppress(OSError):
                for pid in ip("netns", "pids", host.netns).split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(OSError):
                ip("netns", "delete", host.netns)
            with contextlib.suppress(OSError):
                ip("link", "delete", host.veth)  # gone with the namespace, unless a process kept it
        self.hosts.clear()
        self.forwarder.close()
