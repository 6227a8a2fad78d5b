"""Servers on this machine, for the `ray up` test: each host is a network namespace with its own address
on a test bridge, and its own PID, mount and UTS namespaces (so `ray stop` on one host cannot end another,
/tmp, /dev/shm and /run are private, and its hostname is its own); root's home on it is a folder of its
own, and an OpenSSH server accepts one key made for the test. The hosts share the rest of the file
system, as servers share an NFS mount: the project's Python is the "system" Python of every host.

Nothing here reaches beyond the machine: the bridge has no route out (IP forwarding is left as it is, and
the hosts' pip is told to use what is installed, as on an offline server with a local mirror)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


def missing_tools() -> list[str]:
    """What this machine lacks for the hosts (Debian packages: openssh-server, rsync, iproute2,
    util-linux); empty when everything is there."""
    tools = {"sshd": SSHD.exists(), "ssh": shutil.which("ssh"), "ssh-keygen": shutil.which("ssh-keygen")}
    tools |= {name: shutil.which(name) for name in ("rsync", "ip", "unshare")}
    return [name for name, found in tools.items() if not found]


class HostsUnavailable(RuntimeError):
    """The kernel refuses a namespace the hosts need (the one thing a test may skip for)."""


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


def _free_subnet() -> str:
    """A 10.213.X.0/24 no interface on this machine uses (two runs at once must not share one)."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    for _ in range(100):
        subnet = f"10.213.{random.randint(1, 254)}"
        if f" {subnet}." not in used:
            return subnet
    raise RuntimeError("no free 10.213.X.0/24 subnet for the test hosts")


# PID 1 of each host: mount the host's private folders, name it, start its sshd, then reap every orphan
# (Ray's daemons are reparented to PID 1) until the test ends the namespace.
_INIT = r"""
import os, subprocess, sys
name, base, passwd = sys.argv[1:4]
for target in ("/tmp", "/dev/shm", "/run"):
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", target], check=True)
os.makedirs("/run/sshd", mode=0o755)
subprocess.run(["mount", "--bind", passwd, "/etc/passwd"], check=True)
subprocess.run(["hostname", name], check=True)
log = open(os.path.join(base, "sshd.log"), "ab")
subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", os.path.join(base, "sshd_config")], stdout=log, stderr=log)
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
"""


@dataclass(frozen=True)
class Host:
    name: str  # its hostname, which the study's provenance records
    ip: str
    home: Path  # root's home on this host
    netns: str

    def exec(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a shell command on this host as its own sshd would (for a look from the test, not for Ray)."""
        return subprocess.run(
            ["ssh", "-i", str(self.home.parent.parent / "key"), *SSH_OPTIONS, f"root@{self.ip}", command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]


class Hosts:
    """`Hosts(base, 3).start()`: three hosts up, their sshd answering; `close()` ends them all."""

    def __init__(self, base: Path, count: int) -> None:
        self.base = base
        self.count = count
        self.tag = f"{os.getpid() % 10000:04d}"
        self.bridge = f"lbb{self.tag}"
        self.subnet = ""
        self.hosts: list[Host] = []
        self._inits: list[subprocess.Popen] = []

    @property
    def key(self) -> Path:
        return self.base / "key"

    def start(self) -> list[Host]:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self.hosts

    def _start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        probe = subprocess.run(["ip", "netns", "add", f"lbprobe{self.tag}"], capture_output=True, text=True)
        if probe.returncode != 0:
            raise HostsUnavailable(f"the kernel refuses network namespaces: {probe.stderr.strip()}")
        _run("ip", "netns", "del", f"lbprobe{self.tag}")
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.base / "host_key"))
        shutil.copy(self.key.with_suffix(".pub"), self.base / "authorized_keys")
        self.subnet = _free_subnet()
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        python_bins = dict.fromkeys([str(Path(sys.executable).parent), sysconfig.get_path("scripts")])
        for index in range(self.count):
            self._start_host(index, ":".join(python_bins))
        for host, init in zip(self.hosts, self._inits):
            self._wait_for_ssh(host, init)

    def _start_host(self, index: int, python_path: str) -> None:
        name, netns, veth = f"lbhost{index}", f"lbns{self.tag}-{index}", f"lbv{self.tag}{index}"
        folder = self.base / name
        home = folder / "home"
        (home / ".config" / "pip").mkdir(parents=True)
        ip = f"{self.subnet}.{10 + index}"
        _run("ip", "netns", "add", netns)
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _run("ip", "link", "set", veth, "master", self.bridge, "up")
        for command in (
            ["ip", "addr", "add", f"{ip}/24", "dev", "eth0"],
            ["ip", "link", "set", "eth0", "up"],
            ["ip", "link", "set", "lo", "up"],
            # A default route lets Ray find the node's address the way it does on a server (a UDP socket's
            # route, which sends nothing); with forwarding off nothing routed to it leaves the machine.
            ["ip", "route", "add", "default", "via", f"{self.subnet}.1"],
        ):
            _run("ip", "netns", "exec", netns, *command)
        # root's home on this host: the login shell finds the project's Python first, pip stays offline.
        profile = f'export PATH="$HOME/.local/bin:{python_path}:$PATH"\nexport RAY_USAGE_STATS_ENABLED=0\n'
        (home / ".bashrc").write_text(profile)
        (home / ".profile").write_text(". ~/.bashrc\n")
        (home / ".config" / "pip" / "pip.conf").write_text(
            "[global]\nno-index = true\nfind-links =\n[install]\nno-build-isolation = false\n"
        )
        passwd = folder / "passwd"
        lines = Path("/etc/passwd").read_text().splitlines()
        passwd.write_text("".join(_with_home(line, home) + "\n" for line in lines))
        (folder / "sshd_config").write_text(
            f"ListenAddress {ip}\nHostKey {self.base / 'host_key'}\nAuthorizedKeysFile {self.base}/authorized_keys\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\nUsePAM no\n"
            f"PidFile {folder / 'sshd.pid'}\nSubsystem sftp internal-sftp\nMaxStartups 50\nMaxSessions 50\n"
        )
        init = subprocess.Popen(
            ["ip", "netns", "exec", netns, "unshare", "--pid", "--mount", "--uts", "--fork", "--mount-proc"]
            + ["--propagation", "private", "--kill-child", sys.executable, "-c", _INIT, name, str(folder)]
            + [str(passwd)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(folder / "init.log", "wb"),
            start_new_session=True,
        )
        self._inits.append(init)
        self.hosts.append(Host(name=name, ip=ip, home=home, netns=netns))

    def _wait_for_ssh(self, host: Host, init: subprocess.Popen) -> None:
        deadline = time.time() + 60
        while True:
            if init.poll() is not None:
                said = (self.base / host.name / "init.log").read_text(errors="replace").strip()
                if "unshare failed" in said:
                    raise HostsUnavailable(f"the kernel refuses PID, mount or UTS namespaces: {said[-300:]}")
                raise RuntimeError(f"{host.name} ended at once: {said[-1000:]}")
            answer = host.exec("hostname", timeout=30)
            if answer.returncode == 0 and answer.stdout.strip() == host.name:
                return
            if time.time() > deadline:
                log = (self.base / host.name / "sshd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{host.name}'s sshd does not answer: {answer.stderr[-500:]} {log}")
            time.sleep(0.5)

    def close(self) -> None:
        """End every host (killing a PID namespace's first process ends all of its processes), then the
        network namespaces and the bridge."""
        for init in self._inits:
            if init.poll() is None:
                os.killpg(init.pid, signal.SIGKILL)
        for init in self._inits:
            init.wait(timeout=30)
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def _with_home(passwd_line: str, home: Path) -> str:
    fields = passwd_line.split(":")
    if fields[0] == "root" and len(fields) == 7:
        fields[5] = str(home)
    return ":".join(fields)
