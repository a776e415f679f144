"""The package installs offline (Debian's pip + setuptools, no build
isolation) with gRPC stubs generated at build time, and works from the
installed copy without the source tree or protoc."""
import os
import shutil
import subprocess
import sys

from conftest import GOLDEN_CARD, PYROOT, REPO


def test_pip_install_offline(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    # A copy of python/, so the in-tree build leaves nothing in the checkout.
    src = tmp_path / "src"
    shutil.copytree(PYROOT, str(src), ignore=shutil.ignore_patterns(
        "tests", "build", "*.egg-info", "__pycache__"))
    env = dict(os.environ, QKVSHARE_PROTO_DIR=os.path.join(REPO, "proto"))
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-index",
                        str(src)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    assert r.returncode == 0, r.stdout
    code = ("import qkvshare, qkvshare.client as c; from qkvshare import _proto, Card;"
            "ns = _proto.load(); print(ns.tasks_pb2.__file__);"
            "print(Card.load(%r).num_layers)" % GOLDEN_CARD)
    env = dict(os.environ, PATH="/usr/bin:/bin", QKVSHARE_PROTO_DIR="/nonexistent")
    r = subprocess.run([py, "-c", code], cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert r.returncode == 0, r.stdout
    stub_path, layers = r.stdout.split()
    assert stub_path.startswith(str(venv)) and layers == "5"
    assert not os.path.exists(os.path.join(PYROOT, "qkvshare", "v1"))  # nothing generated here
