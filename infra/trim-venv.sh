#!/bin/sh
# Cuts from the images' virtual environment what the job never loads, in the same RUN that
# installs it (infra/Dockerfile.*), so that no layer holds the cut files. Usage:
#   sh trim-venv.sh /opt/venv
#
# Every cut is checked by tests/test_container.py, which runs the whole job in the CPU image and
# imports the job, Keras and TensorFlow in the GPU image. The bytecode (__pycache__) stays: the
# image cannot write it at run time, and without it every command compiles TensorFlow's Python
# again.
set -eu
venv=$1
site=$(echo "$venv"/lib/python3.*/site-packages)
test -d "$site"

# libclang (~60 MB): a TensorFlow requirement for generating code at its own build time; never
# imported. pip: the image installs nothing at run time.
"$venv/bin/python" -m pip uninstall --yes --quiet libclang pip

# C and C++ headers (~290 MB), for compiling extensions against TensorFlow and Arrow.
rm -rf "$site/tensorflow/include" "$site/pyarrow/include"

# Test suites (pandas' alone is 46 MB). Only folders named `tests`: TensorFlow's `test` folders
# are its tf.test API, which `import tensorflow` loads.
find "$site" -type d -name tests -prune -exec rm -rf {} +

# TensorFlow's libraries ship their full symbol tables (~240 MB, 200 MB of it in
# libtensorflow_cc.so.2). Stripping keeps the dynamic symbols that linking and loading use.
find "$site/tensorflow" -type f -name '*.so*' -exec strip --strip-unneeded {} +

# Arrow Flight (~33 MB), Arrow's RPC framework: loaded only by `import pyarrow.flight`, which
# neither the job, pandas nor DuckDB does.
rm -f "$site"/pyarrow/libarrow_flight.so* "$site"/pyarrow/libarrow_python_flight.so* \
    "$site"/pyarrow/_flight.*.so

# pyarrow ships some libraries three times (wheels cannot hold links): libX.so and
# libX.so.N.M.P become links to libX.so.N, the name that is loaded.
for lib in "$site"/pyarrow/lib*.so.[0-9]*[0-9]; do
    case $lib in *.so.*.*) continue ;; esac
    for copy in "${lib%.so.*}.so" "$lib".*; do
        if [ -f "$copy" ] && [ ! -L "$copy" ] && cmp -s "$lib" "$copy"; then
            ln -sf "$(basename "$lib")" "$copy"
        fi
    done
done

# SciPy: the job uses scipy.sparse and scipy.linalg (the EASE ranker, job/itemitem.py); its
# other subpackages (~60 MB: stats, optimize, special, io, signal, spatial, ...) are never
# imported by it or by the libraries it loads.
for sub in "$site"/scipy/*/; do
    case $(basename "$sub") in _lib | linalg | sparse) ;; *) rm -rf "$sub" ;; esac
done

# Arrow's S3 file system (~17 MB): the job uploads with boto3, and pyarrow.fs imports it only
# when it is there.
rm -f "$site"/pyarrow/libarrow_s3.so* "$site"/pyarrow/_s3fs.*.so
