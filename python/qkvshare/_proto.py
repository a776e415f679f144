"""The daemon's gRPC stubs (proto/qkvshare/v1), generated, never committed.

An installed package carries stubs generated at build time (setup.py runs
protoc into build/lib/qkvshare/v1). From a source tree they are generated on
first use with Debian's `protoc --python_out` and `grpc_python_plugin`
(package protobuf-compiler-grpc) into a cache directory
($QKVSHARE_PROTO_OUT, default <tmp>/qkvshare-proto-<hash of the .proto
files>), which is then added to this package's search path so that the
generated `qkvshare.v1.*_pb2` modules import each other normally.

Proto sources: $QKVSHARE_PROTO_DIR, else the package's own copy
(qkvshare/proto, installed), else <repo>/proto next to python/.
"""
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

_MODULES = ("common", "tasks", "cards", "catalog", "admin")
_HERE = os.path.dirname(os.path.abspath(__file__))


def proto_dir():
    """The directory holding qkvshare/v1/*.proto."""
    for d in (os.environ.get("QKVSHARE_PROTO_DIR"), os.path.join(_HERE, "proto"),
              os.path.join(_HERE, "..", "..", "proto")):
        if d and os.path.isfile(os.path.join(d, "qkvshare", "v1", "tasks.proto")):
            return os.path.abspath(d)
    raise ImportError("qkvshare: cannot find proto/qkvshare/v1/*.proto (set QKVSHARE_PROTO_DIR)")


def generate(out_dir, src_dir=None):
    """Runs protoc + grpc_python_plugin for every .proto into out_dir
    (out_dir/qkvshare/v1/*_pb2.py, *_pb2_grpc.py). Raises RuntimeError with
    protoc's message on failure."""
    src_dir = src_dir or proto_dir()
    protoc = shutil.which("protoc") or "/usr/bin/protoc"
    plugin = shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin"
    files = ["qkvshare/v1/%s.proto" % m for m in _MODULES]
    os.makedirs(out_dir, exist_ok=True)
    cmd = [protoc, "-I", src_dir, "--python_out", out_dir, "--grpc_python_out", out_dir,
           "--plugin=protoc-gen-grpc_python=" + plugin] + files
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError("protoc failed (%s): %s" % (" ".join(cmd), r.stderr.strip()))
    open(os.path.join(out_dir, "qkvshare", "v1", "__init__.py"), "a").close()


def _ensure_source_stubs():
    src = proto_dir()
    h = hashlib.sha256()
    for m in _MODULES:
        with open(os.path.join(src, "qkvshare", "v1", m + ".proto"), "rb") as f:
            h.update(f.read())
    out = os.environ.get("QKVSHARE_PROTO_OUT") or os.path.join(
        tempfile.gettempdir(), "qkvshare-proto-%s-%d" % (h.hexdigest()[:16], os.getuid()))
    marker = os.path.join(out, "qkvshare", "v1", "tasks_pb2_grpc.py")
    if not os.path.exists(marker):
        tmp = tempfile.mkdtemp(prefix="qkvshare-proto-gen.")
        generate(tmp, src)
        os.makedirs(out, exist_ok=True)
        for name in os.listdir(os.path.join(tmp, "qkvshare", "v1")):
            os.makedirs(os.path.join(out, "qkvshare", "v1"), exist_ok=True)
            os.replace(os.path.join(tmp, "qkvshare", "v1", name),
                       os.path.join(out, "qkvshare", "v1", name))
        shutil.rmtree(tmp, ignore_errors=True)
    pkg = sys.modules[__package__]
    extra = os.path.join(out, "qkvshare")
    if extra not in pkg.__path__:
        pkg.__path__.append(extra)


def load():
    """Returns a namespace with the pb2 / pb2_grpc modules:
    ns.tasks_pb2, ns.tasks_pb2_grpc, ns.common_pb2, ... ."""
    try:
        importlib.import_module(__package__ + ".v1.tasks_pb2_grpc")
    except ImportError:
        _ensure_source_stubs()

    class _NS:
        pass

    ns = _NS()
    for m in _MODULES:
        setattr(ns, m + "_pb2", importlib.import_module("%s.v1.%s_pb2" % (__package__, m)))
        if m != "common":
            setattr(ns, m + "_pb2_grpc",
                    importlib.import_module("%s.v1.%s_pb2_grpc" % (__package__, m)))
    return ns
