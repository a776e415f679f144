"""Shared fixtures: repo paths, the C++ dump tool, a real qkvshared daemon.

The binaries come from bazel-bin (scripts/test.sh builds them with
`bazel test //...` first); if they are missing they are built here with
`bazel build //daemon:qkvshared //cachecard:dump_card`. $QKVSHARE_BIN_DIR
overrides the bazel-bin location.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PYROOT = os.path.dirname(HERE)
REPO = os.path.dirname(PYROOT)
sys.path.insert(0, PYROOT)

MODEL_DIR = os.path.join(REPO, "models", "stories260K")
GOLDEN_CARD = os.path.join(REPO, "cachecard", "testdata", "golden_v2.qkvcard")
BINARIES = {"qkvshared": "daemon/qkvshared", "dump_card": "cachecard/dump_card"}


def _bin_dir():
    return os.environ.get("QKVSHARE_BIN_DIR") or os.path.join(REPO, "bazel-bin")


def binary(name):
    path = os.path.join(_bin_dir(), BINARIES[name])
    if not os.access(path, os.X_OK):
        subprocess.run(["bazel", "build", "//daemon:qkvshared", "//cachecard:dump_card"],
                       cwd=REPO, check=True)
    assert os.access(path, os.X_OK), path
    return path


@pytest.fixture(scope="session")
def tmpdir_session():
    d = tempfile.mkdtemp(prefix="qkvpy.")
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Dumper:
    """Runs cachecard:dump_card: the C++ decoder's float32 K/V of a card."""

    def __init__(self, path, tmp):
        self.path, self.tmp, self.n = path, tmp, 0

    def run(self, card_bytes):
        """(returncode, stderr, array [L, 2, H, N, D] or None)."""
        self.n += 1
        src = os.path.join(self.tmp, "c%d.qkvcard" % self.n)
        out = os.path.join(self.tmp, "c%d.npy" % self.n)
        with open(src, "wb") as f:
            f.write(card_bytes)
        r = subprocess.run([self.path, src, out], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
        arr = np.load(out) if r.returncode == 0 else None
        return r.returncode, r.stderr, arr

    def kv(self, card_bytes):
        rc, err, arr = self.run(card_bytes)
        assert rc == 0, err
        return arr


@pytest.fixture(scope="session")
def dumper(tmpdir_session):
    return Dumper(binary("dump_card"), tmpdir_session)


def _workflow(name, handoff):
    return ("name: %s\nhandoff: %s\nhops:\n  - agent: writer\n    instruction: \"{input}\"\n"
            "  - agent: continuer\n    instruction: \"The next day,\"\n"
            "  - agent: ender\n    instruction: \"In the end,\"\n" % (name, handoff))


WORKFLOWS = {
    "story": "{mode: card, bits: 4, policy: adaptive}",
    "story_full": "{mode: full}",
    "story_u4": "{mode: card, bits: 4, policy: uniform}",
    "story_u8": "{mode: card, bits: 8, policy: uniform}",
    "story_u16": "{mode: card, bits: 16, policy: uniform}",
    "story_a3": "{mode: card, bits: 3, policy: adaptive}",
}
MAX_CARD_BYTES = 400000


class Daemon:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="qkvpyd.", dir="/tmp")
        self.sock = os.path.join(self.dir, "q.sock")
        self.address = "unix://" + self.sock
        self.instance = "pytest%d_%s" % (os.getpid(), os.path.basename(self.dir)[-6:])
        os.makedirs(os.path.join(self.dir, "workflows"))
        for name, handoff in WORKFLOWS.items():
            with open(os.path.join(self.dir, "workflows", name + ".yaml"), "w") as f:
                f.write(_workflow(name, handoff))
        agents = "".join("  %s: {model: stories, generation: {max_new_tokens: 24}}\n" % a
                         for a in ("writer", "continuer", "ender"))
        config = ("listen: %s\ninstance: %s\nworkflows_dir: workflows\nlog_level: info\n"
                  "shutdown_grace_seconds: 5\n"
                  "models:\n  stories: {path: %s, dtype: f32, threads: 1}\n"
                  "agents:\n%s"
                  "card_store: {quota_bytes: 67108864}\n"
                  "handoff: {mode: card, bits: 4, policy: adaptive, group_size: 32}\n"
                  "limits: {max_concurrent_tasks: 1, queue_length: 2, max_card_bytes: %d}\n"
                  % (self.address, self.instance, MODEL_DIR, agents, MAX_CARD_BYTES))
        self.config = os.path.join(self.dir, "daemon.yaml")
        with open(self.config, "w") as f:
            f.write(config)
        self.log = open(os.path.join(self.dir, "qkvshared.log"), "w")
        self.proc = subprocess.Popen([binary("qkvshared"), "--config", self.config],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        from qkvshare import Client
        from qkvshare.errors import RpcError
        self.client = Client(self.address, timeout=60)
        deadline = time.time() + 60
        while True:
            try:
                self.client.status()
                break
            except RpcError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("qkvshared did not start:\n" + self.read_log())
                time.sleep(0.1)

    def read_log(self):
        self.log.flush()
        with open(os.path.join(self.dir, "qkvshared.log")) as f:
            return f.read()

    def stop(self):
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def daemon():
    d = Daemon()
    yield d
    d.stop()


@pytest.fixture(scope="session")
def client(daemon):
    return daemon.client


INPUT = "Once upon a time, there was a little girl named Lily."


@pytest.fixture(scope="session")
def story_runs(client):
    """One finished task per workflow on the same input: {name: (Task, events)}."""
    out = {}
    for name in ("story_full", "story_u4", "story_u8", "story_u16", "story_a3", "story"):
        tid = client.submit(name, INPUT)
        events = list(client.watch(tid))
        out[name] = (client.get(tid), events)
    return out
