"""The project's optional C extensions; everything else about the package is in pyproject.toml.

Each extension speeds up a path whose pure-Python version stays in the package as the
fallback and the reference its tests compare against, so every one is ``optional``: without a
compiler or the Python headers (Debian's python3-dev) the build prints a warning and the
install goes on. Another extension is one more line in ``EXTENSIONS``.
"""

from setuptools import Extension, setup

EXTENSIONS = [
    # the pax headers of a plain regular file (tape_formats/archive/writer.py)
    Extension("tape_formats.archive._paxfast", ["tape_formats/archive/_paxfast.c"], optional=True),
    # READ(6)/WRITE(6) on the streaming fast paths (vtl/iscsi/stream_paths.py)
    Extension("vtl._fastpath", ["vtl/_fastpath.c"], optional=True),
]

setup(ext_modules=EXTENSIONS)
