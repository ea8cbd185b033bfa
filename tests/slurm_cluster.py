"""A one-node Slurm cluster on this machine, for tests/test_executor.py and for trying
``l2bn sweep --executor slurm`` by hand:

    python tests/slurm_cluster.py start /tmp/l2bn-slurm   # prints the line to export
    python tests/slurm_cluster.py stop /tmp/l2bn-slurm

It runs Debian's packages (``apt-get install slurm-wlm munge``; ``make slurm`` installs them):
``munged`` with a key generated on the spot, then ``slurmctld`` and ``slurmd`` for one node,
``localhost``, with every CPU of the machine in one partition, ``debug``. Everything lives in one
folder: ``slurm.conf``, the munge key and socket, state and spool directories, logs and the pids of
the three daemons. Ports are picked free on 127.0.0.1, so the cluster stays off any other Slurm.
Jobs run as root, which is also ``SlurmUser``, so the daemons need root.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")
SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])  # the daemons' home


def program(name: str) -> str | None:
    return shutil.which(name, path=SEARCH)


class ClusterError(RuntimeError):
    """The cluster cannot start here; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """The cluster whose files live in ``root``."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.pids_file = self.root / "pids.json"
        self._children: list[subprocess.Popen] = []  # kept, so that each is reaped, not warned about

    @property
    def env(self) -> dict[str, str]:
        """What a Slurm command needs in its environment to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def missing(self) -> str | None:
        """Why the cluster cannot start on this machine, or None."""
        absent = [p for p in PROGRAMS if program(p) is None]
        if absent:
            return (f"{', '.join(absent)} not installed (apt-get install slurm-wlm munge, or "
                    "make slurm)")
        if os.geteuid() != 0:
            return "the Slurm daemons of this test cluster run as root, and this user is not root"
        return None

    def start(self, timeout: float = 60) -> None:
        """Start munged, slurmctld and slurmd and wait until the node is idle; ``ClusterError``
        (with the daemons' last log lines) when it does not come up."""
        reason = self.missing()
        if reason is not None:
            raise ClusterError(reason)
        for d in ("munge", "state", "spool", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.conf.write_text(self._config())
        m = self.root / "munge"
        pids = {"munged": self._daemon(["munged", "-F", "--force", f"--key-file={key}",
                                        f"--socket={self.munge_socket}", f"--pid-file={m}/munged.pid",
                                        f"--seed-file={m}/munged.seed", f"--log-file={m}/munged.log"])}
        self._wait(lambda: self.munge_socket.exists(), 10, "munged did not create its socket")
        pids["slurmctld"] = self._daemon(["slurmctld", "-D", "-f", str(self.conf)])
        pids["slurmd"] = self._daemon(["slurmd", "-D", "-f", str(self.conf), "-N", "localhost"])
        self.pids_file.write_text(json.dumps(pids))
        try:
            self._wait(lambda: self.node_state() == "idle", timeout, "the node did not become idle")
        except ClusterError:
            self.stop()
            raise

    def _config(self) -> str:
        r = self.root
        return "\n".join([
            "ClusterName=l2bntest",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={r}/state",
            f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/state/slurmctld.pid",
            f"SlurmdPidFile={r}/spool/slurmd.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log",
            f"SlurmdLogFile={r}/log/slurmd.log",
            # No cgroups, no accounting database: what a container or a bare VM offers.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "SchedulerType=sched/builtin",
            # Cores are what a task takes: one-CPU tasks run side by side.
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            "KillWait=2",
            f"NodeName=localhost CPUs={os.cpu_count()} RealMemory=1024 State=UNKNOWN",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
            "",
        ])

    def _daemon(self, argv: list[str]) -> int:
        with open(self.root / "log" / f"{argv[0]}.out", "ab") as log:  # the daemon keeps its own copy
            proc = subprocess.Popen([program(argv[0]), *argv[1:]], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env={**os.environ, **self.env},
                                    start_new_session=True)
        self._children.append(proc)
        return proc.pid

    def _wait(self, ready, timeout: float, what: str) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise ClusterError(f"{what} within {timeout:g} s; {self.log_tail()}")
            time.sleep(0.2)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """A Slurm command (``squeue``, ``scancel``, ...) against this cluster."""
        return subprocess.run(argv, env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=60, check=check)

    def node_state(self) -> str:
        out = self.run("sinfo", "-h", "-n", "localhost", "-o", "%t", check=False)
        return out.stdout.strip()

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of every daemon's log, for a message about why it did not start."""
        tails = []
        for log in sorted((self.root / "log").glob("*")) + [self.root / "munge" / "munged.log"]:
            if log.exists() and log.stat().st_size:
                text = log.read_text(errors="replace").strip().splitlines()[-lines:]
                tails.append(f"{log.name}: " + " | ".join(text))
        return "; ".join(tails) or "no daemon wrote a log"

    def stop(self) -> None:
        """Cancel every job of the cluster, then stop the daemons this cluster started."""
        if self.conf.exists() and self.node_state():
            self.run("scancel", "--user=root", check=False)
            self._wait_quietly(lambda: not self.run("squeue", "-h", check=False).stdout.strip(), 20)
        pids = json.loads(self.pids_file.read_text()) if self.pids_file.exists() else {}
        for name in ("slurmd", "slurmctld", "munged"):
            if name in pids:
                _terminate(pids[name])
        self.pids_file.unlink(missing_ok=True)

    def _wait_quietly(self, ready, timeout: float) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.2)


def _terminate(pid: int, timeout: float = 10) -> None:
    """SIGTERM to the daemon ``pid`` that this cluster started, SIGKILL if it lingers."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return  # our child, now reaped
        except ChildProcessError:  # started by another process (the command line): poll it
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: python tests/slurm_cluster.py start|stop FOLDER")
    cluster = SlurmCluster(sys.argv[2])
    if sys.argv[1] == "stop":
        cluster.stop()
    else:
        try:
            cluster.start()
        except ClusterError as err:
            sys.exit(f"slurm_cluster: {err}")
        print(f"export SLURM_CONF={cluster.conf}")
