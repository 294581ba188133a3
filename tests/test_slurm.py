"""The SLURM profile on a real single-node SLURM cluster started on this machine (Debian's slurmctld, slurmd and
munge, installed with apt-get where missing and the tests run as root): the micro DAG with shards=2 through
snakemake-executor-plugin-slurm to the mIoU table, every job seen by the scheduler. Skipped where the
packages cannot be installed or the daemons cannot start."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

DAEMONS = ("munged", "slurmctld", "slurmd")
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
pytestmark = pytest.mark.slow


def installed() -> bool:
    return all(shutil.which(d) or Path(f"/usr/sbin/{d}").exists() for d in DAEMONS) and bool(shutil.which("sbatch"))


def install() -> bool:
    """Debian's packages, where missing and this process may install them."""
    if installed():
        return True
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            return False
    return installed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def available_mib() -> int:
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return int(meminfo["MemAvailable"].split()[0]) // 1024


def slurm_conf(d: Path, host: str) -> str:
    """One node with this machine's CPUs and most of its free memory, one partition; no accounting database:
    finished jobs go to a job-completion file, which ``sacct -c`` reads."""
    return "\n".join([
        "ClusterName=local", f"SlurmctldHost={host}", f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
        "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge", "CredType=cred/munge",
        f"AuthInfo=socket={d / 'munge.socket'}", f"StateSaveLocation={d / 'state'}", f"SlurmdSpoolDir={d / 'spool'}",
        f"SlurmctldPidFile={d / 'slurmctld.pid'}", f"SlurmdPidFile={d / 'slurmd.pid'}",
        f"SlurmctldLogFile={d / 'slurmctld.log'}", f"SlurmdLogFile={d / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory", "ReturnToService=2", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={d / 'jobcomp.txt'}", "MpiDefault=none",
        f"NodeName={host} CPUs={os.cpu_count()} RealMemory={int(available_mib() * 0.8)}",
        f"PartitionName=main Nodes={host} Default=YES State=UP", "",
    ])


def stop(d: Path) -> None:
    """The daemons, by the pids they wrote."""
    for daemon in reversed(DAEMONS):
        pid_file = d / f"{daemon}.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


def wait_until(check, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.5)
    return False


# Where srun inside a job looks (the plugin's job step drops SLURM_CONF from the environment).
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running single-node cluster; yields the environment its commands need (SLURM_CONF)."""
    if not install():
        pytest.skip("Debian's slurmctld, slurmd and munge are not installed and cannot be")
    if SYSTEM_CONF.exists():
        pytest.skip(f"{SYSTEM_CONF} exists: this machine has a SLURM configuration of its own")
    d = tmp_path_factory.mktemp("slurm")
    d.chmod(0o700)  # munged refuses a key in a folder others can write
    (d / "state").mkdir()
    (d / "spool").mkdir()
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    (d / "slurm.conf").write_text(slurm_conf(d, socket.gethostname()))
    env = {**os.environ, "SLURM_CONF": str(d / "slurm.conf")}
    try:
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(d / "slurm.conf", SYSTEM_CONF)
        subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={d / 'munge.socket'}",
                        f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'munged.log'}",
                        f"--seed-file={d / 'munged.seed'}"], check=True, capture_output=True)
        subprocess.run(["slurmctld"], env=env, check=True, capture_output=True)
        subprocess.run(["slurmd"], env=env, check=True, capture_output=True)
        idle = wait_until(lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True,
                                                            text=True).stdout, 30)
        if not idle:
            pytest.skip(f"the SLURM node did not come up: {(d / 'slurmd.log').read_text()[-500:]}")
        yield env
    except subprocess.CalledProcessError as e:
        pytest.skip(f"{e.cmd[0]} did not start: {e.stderr.decode()[-300:]}")
    finally:
        stop(d)
        SYSTEM_CONF.unlink(missing_ok=True)


def fitted_profile(dest: Path) -> Path:
    """The repository's SLURM profile with each job on one CPU and a little memory, so that the node runs as many
    jobs side by side as it has CPUs, and the scheduler polled often (a test cluster with no accounting database:
    squeue reports the states)."""
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    for res in profile["set-resources"].values():
        res.update(cpus_per_task=1, mem_mb=1000, runtime=10)
    profile["set-threads"] = dict.fromkeys(profile["set-threads"], 1)
    profile.update({"slurm-status-command": "squeue", "slurm-no-account": True, "jobs": os.cpu_count(),
                    "slurm-init-seconds-before-status-checks": 1, "seconds-between-status-checks": 2,
                    "latency-wait": 5, "retries": 0})
    dest.mkdir()
    (dest / "config.yaml").write_text(yaml.safe_dump(profile))
    return dest


def test_the_micro_dag_runs_through_slurm_to_the_table(snakemake, cluster, tmp_path):
    wd = tmp_path / "wf"
    wd.mkdir()
    (wd / "config").symlink_to(ROOT / "config")
    (wd / "no_upper_bound.yaml").write_text("segmentation: {upper_bound: false}\n")  # its jobs are the same rules'
    profile = fitted_profile(tmp_path / "profile")
    proc = snakemake(wd, "--profile", str(profile), "--configfile", "config/micro.yaml", "no_upper_bound.yaml",
                     "--config", "device=cpu", "shards=2", env={"SLURM_CONF": cluster["SLURM_CONF"]})
    rows = json.loads((wd / "results/micro/tables/miou.json").read_text())
    assert [r["stage"] for r in rows] == ["cam", "pseudo_labels", "segmentation", "segmentation"]
    assert all(0 <= r["miou"] <= 100 for r in rows)
    assert len(list((wd / "results/micro/seed_0/shards/cams/puzzle").glob("*-of-2"))) == 2
    # every job went through the scheduler and completed there, in this working directory
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", proc.stdout + proc.stderr)
    jobs = subprocess.run(["sacct", "-c", "-n", "-P", "-o", "JobID,State,WorkDir"], env=cluster,
                          capture_output=True, text=True, check=True).stdout.split()
    runs = {job: (state, workdir) for job, state, workdir in (line.split("|") for line in jobs)}
    assert len(submitted) == 17  # every job but the local ones (localrules), the per-image stages twice
    assert all(runs[job] == ("COMPLETED", str(wd)) for job in submitted)
