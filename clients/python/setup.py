"""Build hook: generate the bi.data.v1 stubs from proto/ with grpcio-tools.

The stubs (`bi/data/v1/*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py`) are written
into the build directory only, never into the source tree, so nothing
generated is committed. The protos are read from $BI_DATA_PROTO_DIR or the
repository's proto/ two levels up.
"""
import glob
import os
import re

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.environ.get("BI_DATA_PROTO_DIR") or os.path.join(HERE, "..", "..", "proto")
PACKAGE = "bi/data/v1"


def proto_files():
    files = sorted(glob.glob(os.path.join(PROTO_DIR, PACKAGE, "*.proto")))
    if not files:
        raise SystemExit(f"no .proto files under {os.path.join(PROTO_DIR, PACKAGE)} (set BI_DATA_PROTO_DIR)")
    return [os.path.relpath(f, PROTO_DIR) for f in files]


def generate(out):
    import grpc_tools
    from grpc_tools import protoc

    wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{wkt}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *proto_files()]
    if protoc.main(args) != 0:
        raise SystemExit("grpc_tools.protoc failed on " + " ".join(proto_files()))
    for d in ("bi", "bi/data", PACKAGE):
        open(os.path.join(out, d, "__init__.py"), "a").close()


def runtime_requirements():
    """grpcio and protobuf no older than the generated code requires."""
    from importlib.metadata import version

    grpc_version = version("grpcio-tools")
    protoc_version = protobuf_gencode_version()
    major = int(protoc_version.split(".")[0])
    return [f"grpcio>={grpc_version}", f"protobuf>={protoc_version},<{major + 1}",
            "googleapis-common-protos>=1.63"]


def protobuf_gencode_version():
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        generate(out)
        with open(os.path.join(out, PACKAGE, os.path.basename(proto_files()[0])[:-6] + "_pb2.py")) as f:
            m = re.search(r"^# Protobuf Python Version: (\d+\.\d+\.\d+)", f.read(), re.M)
    if not m:
        raise SystemExit("cannot read the protobuf version of the generated code")
    return m.group(1)


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        generate(self.build_lib)


# The generated bi/ tree lands in build_lib next to bi_data_client, and the
# wheel takes all of build_lib.
setup(cmdclass={"build_py": BuildWithStubs}, install_requires=runtime_requirements())
