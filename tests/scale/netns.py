"""Hosts for the scale-out chaos test: Linux network namespaces joined by veth pairs to a
bridge in the root namespace, or plain processes on loopback where namespaces cannot be
made (not root, no ``ip``).

With namespaces (``ip netns add``, ip-netns(8)): the bridge has the subnet's first
address (``10.213.<n>.1/24``), where the test's services listen (its Redis or Redis
Cluster, the SendGrid stand-in, one RabbitMQ forwarder per host); host *i* is namespace
``nurture-hosts-<pid>-<seq>-<name>`` with address ``.<i + 2>`` on its end of a veth pair
whose other end is a port of the bridge. Killing a host is what a host dying looks like
to everyone else: its bridge port goes down first (the cable is out: no FIN or RST leaves
the namespace, its peers' TCP connections just go silent), then every process in the
namespace (``ip netns pids``) gets SIGKILL.

Names carry the pid (and a sequence number), so parallel test processes do not collide;
:meth:`Network.close` deletes everything the test made, and each new network first
deletes what a test process that no longer runs left behind.

On loopback the hosts are plain processes on 127.0.0.1 and a kill is SIGKILL of the
host's processes: the kernel then closes their sockets (FIN/RST), so peers notice at once.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.chaos.procs import NurtureProcess

LOOPBACK = "127.0.0.1"
NETNS_PREFIX = "nurture-hosts-"
LINK_PREFIX = "nh-"  # interface names: at most 15 characters (IFNAMSIZ - 1)
_sequence = itertools.count()


class NetnsError(RuntimeError):
    """An ``ip`` command failed while building or removing the test network."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` (iproute2).

    Raises:
        NetnsError: When it fails and ``check`` is set, with the command and its stderr.
    """
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def netns_available() -> bool:
    """True when this process can make network namespaces: root, ``ip`` installed, and
    a probe namespace can be added and deleted again."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"{NETNS_PREFIX}{os.getpid()}-probe"
    made = ip("netns", "add", probe, check=False).returncode == 0
    if made:
        ip("netns", "del", probe, check=False)
    return made


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete namespaces and links this module made in test processes that have exited
    (a test process killed before its teardown); returns their names."""
    removed = []
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        found = re.fullmatch(rf"{NETNS_PREFIX}(\d+)-.*", name)
        if found and not _pid_alive(int(found[1])):
            ip("netns", "del", name, check=False)
            removed.append(name)
    for line in ip("-o", "link", "show", check=False).stdout.splitlines():
        found = re.match(rf"\d+: ({LINK_PREFIX}(\d+)-\w+)[@:]", line)
        if found and not _pid_alive(int(found[2])):
            ip("link", "del", found[1], check=False)
            removed.append(found[1])
    return removed


@dataclass
class Host:
    """One worker host: a network namespace, or (``namespace`` None) a loopback group."""

    name: str
    address: str
    namespace: str | None = None
    link: str | None = None  # its veth end in the root namespace (a bridge port)
    processes: list[NurtureProcess] = field(default_factory=list)

    @property
    def prefix(self) -> list[str]:
        """What goes before a command to run it on this host."""
        return ["ip", "netns", "exec", self.namespace] if self.namespace else []

    def pids(self) -> list[int]:
        """Every process on this host (``ip netns pids``; on loopback, the ones we
        started that still run)."""
        if self.namespace is None:
            return [proc.pid for proc in self.processes if proc.alive()]
        listed = ip("netns", "pids", self.namespace, check=False).stdout.split()
        return [int(pid) for pid in listed]


@dataclass
class Network:
    """The hosts of one test and the address its services listen on for them."""

    mode: str  # "netns" or "loopback"
    service_address: str
    hosts: list[Host]
    bridge: str | None = None

    @classmethod
    def create(cls, names: Sequence[str], *, use_netns: bool) -> Network:
        """Hosts named ``names``: namespaces on a bridge, or loopback processes."""
        if not use_netns:
            return cls("loopback", LOOPBACK, [Host(name, LOOPBACK) for name in names])
        remove_stale()
        tag = f"{os.getpid()}-{next(_sequence) % 16:x}"
        subnet = _free_subnet()
        network = cls("netns", f"{subnet}.1", [], bridge=f"{LINK_PREFIX}{tag}br")
        try:
            network._build(names, tag, subnet)
        except BaseException:
            network.close()
            raise
        return network

    def _build(self, names: Sequence[str], tag: str, subnet: str) -> None:
        assert self.bridge is not None
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.service_address}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i, name in enumerate(names):
            host = Host(
                name,
                f"{subnet}.{i + 2}",
                namespace=f"{NETNS_PREFIX}{tag}-{name}",
                link=f"{LINK_PREFIX}{tag}{name}",
            )
            self.hosts.append(host)
            assert host.namespace is not None and host.link is not None
            inside = f"{host.link}p"
            ip("netns", "add", host.namespace)
            ip("link", "add", host.link, "type", "veth", "peer", "name", inside)
            ip("link", "set", host.link, "master", self.bridge)
            ip("link", "set", host.link, "up")
            ip("link", "set", inside, "netns", host.namespace)
            ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", inside)
            ip("-n", host.namespace, "link", "set", inside, "up")
            ip("-n", host.namespace, "link", "set", "lo", "up")
        self.check_reachable()

    def check_reachable(self) -> None:
        """Every host opens a TCP connection to the service address.

        Raises:
            NetnsError: Naming the host that cannot (a firewall on the bridge, say).
        """
        with socket.create_server((self.service_address, 0)) as listener:
            port = listener.getsockname()[1]
            target = (self.service_address, port)
            probe = f"import socket; socket.create_connection({target!r}, 5)"
            for host in self.hosts:
                result = subprocess.run(
                    [*host.prefix, sys.executable, "-c", probe],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
                if result.returncode != 0:
                    raise NetnsError(
                        f"host {host.name} ({host.namespace}) cannot reach "
                        f"{self.service_address}:{port}: {result.stderr.strip()[-300:]}"
                    )

    def kill(self, host: Host) -> list[int]:
        """Kill a host as a host dies: its link goes down first (nothing it sends gets
        out, so no FIN or RST reaches its peers), then SIGKILL to every process on it.
        Returns the pids killed."""
        if host.link is not None:
            ip("link", "set", host.link, "down")
        pids = host.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in host.processes:
            proc.kill()  # reap it
        return pids

    def close(self) -> None:
        """Kill whatever still runs on the hosts and delete the namespaces, veth pairs and
        bridge (loopback: nothing to delete).

        Raises:
            NetnsError: When something of ours is still there afterwards.
        """
        for host in self.hosts:
            for pid in host.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for proc in host.processes:
                proc.close()
        if self.mode != "netns":
            return
        for host in self.hosts:
            if host.namespace is not None:
                ip("netns", "del", host.namespace, check=False)
            if host.link is not None:
                ip("link", "del", host.link, check=False)  # gone with the namespace as a rule
        if self.bridge is not None:
            ip("link", "del", self.bridge, check=False)
        left = [
            name
            for name in [self.bridge, *(h.namespace for h in self.hosts)]
            if name and _exists(name)
        ]
        if left:
            raise NetnsError(f"could not delete {left}: ip netns del / ip link del them")


def _exists(name: str) -> bool:
    if name.startswith(NETNS_PREFIX):
        return name in ip("netns", "list", check=False).stdout.split()
    return ip("link", "show", name, check=False).returncode == 0


def _free_subnet() -> str:
    """A ``10.213.<n>`` /24 no interface or route of this machine uses yet.

    Raises:
        NetnsError: When every one of them is taken.
    """
    used = ip("-4", "addr", "show", check=False).stdout + ip("-4", "route", check=False).stdout
    start = os.getpid() % 250
    for n in range(250):
        subnet = f"10.213.{(start + n) % 250 + 1}"
        if f"{subnet}." not in used:
            return subnet
    raise NetnsError("no free 10.213.x.0/24 subnet for the test hosts")
