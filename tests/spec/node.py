"""A real edgerate node (and a sipp peer) for the spec checks: started from the built binary on
a config of its own, stopped at exit."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time

import requests

REPO = pathlib.Path(__file__).resolve().parents[2]


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not within {timeout} s")


class Node:
    """A node with a known operator key and a SIP trunk answered by sipp (404 to every call)."""

    def __init__(self, binary):
        self.dir = tempfile.TemporaryDirectory(prefix="edgerate-spec-")
        root = pathlib.Path(self.dir.name)
        self.operator_key = "spec-operator-key"
        self.sip_port = free_port(socket.SOCK_DGRAM)
        self.sipp = subprocess.Popen(
            ["sipp", "-sf", str(REPO / "sip/scenarios/reject-404.xml"), "-i", "127.0.0.1",
             "-p", str(self.sip_port), "-nostdin", "-timeout", "600s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = root / "config.toml"
        config.write_text(
            f'[node]\ndata_dir = "{root / "data"}"\n'
            f'[http]\nlisten = "127.0.0.1:{port}"\n'
            f'[operator]\nkey = "{self.operator_key}"\n'
            f'[sip]\ntrunk = "127.0.0.1:{self.sip_port}"\n')
        self.log = open(root / "node.log", "wb")
        self.process = subprocess.Popen([binary, "serve", "--config", str(config)],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        wait_for("the node to be ready", self.ready)

    def ready(self):
        try:
            return requests.get(self.url + "/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def operator(self):
        return {"Authorization": f"Bearer {self.operator_key}"}

    def stop(self):
        for p in (self.process, self.sipp):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.log.close()

    def log_text(self):
        return (pathlib.Path(self.dir.name) / "node.log").read_text(errors="replace")
