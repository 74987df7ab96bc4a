"""The embedded stack listens on loopback only: Kafka, the warehouse and MLflow.

Every socket that a stack process (or any of its children, e.g. MLflow's
uvicorn worker) listens on, or has bound for UDP, is read from ``/proc``:
the process's socket inodes from ``/proc/<pid>/fd``, their addresses from
``/proc/net/{tcp,tcp6,udp,udp6}``. Each must be a loopback address. Then each
service port is tried through this machine's non-loopback addresses.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.stack.process import ProcessTable

pytestmark = pytest.mark.integration

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def descendants(root: int) -> set[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def decode(hex_addr: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    # The kernel prints each 32-bit word in host (little-endian) order.
    fixed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(fixed), int(port, 16)


def bound_sockets(
    pids: set[int],
) -> list[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """(table, address, port) of every listening TCP and every bound UDP socket of ``pids``."""
    inodes = socket_inodes(pids)
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode not in inodes or (table.startswith("tcp") and state != LISTEN):
                continue
            address, port = decode(local)
            found.append((table, address, port))
    return found


def is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def local_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (from the routing table's view)."""
    found = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(str(info[4][0]))
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
            found.add(probe.getsockname()[0])
        except OSError:
            pass
    return sorted(a for a in found if not ipaddress.ip_address(a).is_loopback)


def test_every_stack_process_listens_on_loopback_only(stack: Settings) -> None:
    table = ProcessTable(stack.state_dir / "run")
    ports: dict[str, set[int]] = {}
    for name in ("kafka", "clickhouse", "mlflow"):
        record = table.alive(name)
        assert record is not None, f"{name} is not running from {stack.state_dir}"
        sockets = bound_sockets(descendants(record.pid))
        listening = [s for s in sockets if s[0].startswith("tcp")]
        assert listening, f"{name} (pid {record.pid}) has no listening socket"
        exposed = [s for s in sockets if not is_loopback(s[1])]
        assert exposed == [], f"{name} is bound beyond loopback: {exposed}"
        ports[name] = {port for _, _, port in listening}

    assert stack.kafka.first_server[1] in ports["kafka"]
    assert stack.embedded.kafka_controller_port in ports["kafka"]
    assert stack.clickhouse.host_port[1] in ports["clickhouse"]
    mlflow_port = stack.mlflow.host_port
    assert mlflow_port is not None and mlflow_port[1] in ports["mlflow"]

    # And from the outside: through any other address of this machine, nothing answers.
    for address in local_addresses():
        for name, service_ports in ports.items():
            for port in service_ports:
                with socket.socket() as sock:
                    sock.settimeout(2)
                    assert sock.connect_ex((address, port)) != 0, (
                        f"{name} answers on {address}:{port}"
                    )
