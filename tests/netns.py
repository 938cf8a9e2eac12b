"""Test hosts in network namespaces: each host a namespace with one veth on a shared bridge.

The bridge lives in the root namespace with the subnet's first address, so the test process
itself can reach every host; nothing is routed beyond the bridge. Needs root (`ip netns add`).
"""
from __future__ import annotations

import os
import subprocess


class NetnsUnavailable(RuntimeError):
    """Namespaces or virtual links cannot be made here (not root, or a sandbox forbids it)."""


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")


def _free_subnet() -> str:
    """A 10.x.y /24 prefix that no route on this machine uses yet (chosen from our pid)."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for offset in range(64):
        seed = os.getpid() + offset
        prefix = f"10.{200 + seed % 50}.{seed // 50 % 256}"
        if f"{prefix}." not in routes:
            return prefix
    raise NetnsUnavailable("no free 10.x.y.0/24 subnet for the test hosts")


class NetnsLab:
    """Named hosts, each a network namespace with one address on the lab's bridge."""

    def __init__(self, hosts: list[str]) -> None:
        tag = f"gq{os.getpid() % 100000}"
        self.bridge = f"{tag}br"
        self.prefix = _free_subnet()
        self.namespaces = {host: f"{tag}-{host}" for host in hosts}
        self.addresses = {host: f"{self.prefix}.{i + 2}" for i, host in enumerate(hosts)}
        self._made: list[str] = []  # namespaces created so far, for close()
        self._bridge_made = False

    @classmethod
    def create(cls, hosts: list[str]) -> "NetnsLab":
        """Make the bridge and the hosts; on any failure undo what was made and raise NetnsUnavailable."""
        lab = cls(hosts)
        try:
            lab._build()
        except Exception:
            lab.close()
            raise
        return lab

    def _build(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._bridge_made = True
        _ip("addr", "add", f"{self.prefix}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, (host, ns) in enumerate(self.namespaces.items()):
            _ip("netns", "add", ns)
            self._made.append(ns)
            outside, inside = f"{self.bridge}{i}", f"{self.bridge}{i}n"
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", ns)
            _ip("link", "set", outside, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{self.addresses[host]}/24", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def address(self, host: str) -> str:
        """The host's address on the bridge."""
        return self.addresses[host]

    def exec_prefix(self, host: str) -> list[str]:
        """Prepend to a command line to run it on `host`."""
        return ["ip", "netns", "exec", self.namespaces[host]]

    def close(self) -> None:
        """Delete the namespaces (their veths go with them) and the bridge. Stop their processes first."""
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self._made.clear()
        if self._bridge_made:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
            self._bridge_made = False
