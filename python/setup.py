"""setuptools hook: generates the gRPC stubs into the built package.

build_py runs protoc --python_out / grpc_python_plugin on ../proto (or
$QKVSHARE_PROTO_DIR) into build/lib/qkvshare/v1 and copies the .proto files
to qkvshare/proto, so an installed package needs no protoc at run time.
Generated code is never written into the source tree.
"""
import os
import shutil
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        sys.path.insert(0, HERE)
        from qkvshare import _proto  # standard library only at import
        src = _proto.proto_dir()
        _proto.generate(self.build_lib, src)
        dst = os.path.join(self.build_lib, "qkvshare", "proto", "qkvshare", "v1")
        os.makedirs(dst, exist_ok=True)
        for name in os.listdir(os.path.join(src, "qkvshare", "v1")):
            if name.endswith(".proto"):
                shutil.copy(os.path.join(src, "qkvshare", "v1", name), dst)


setup(cmdclass={"build_py": BuildWithStubs})
