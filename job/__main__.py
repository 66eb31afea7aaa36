import contextlib
import os
import sys

from job.core.signals import ignore_from_now

try:
    from job.cli import main

    code = main()
except KeyboardInterrupt:  # Ctrl-C before main() took over the signal (while starting)
    ignore_from_now()
    print("error: interrupted", file=sys.stderr)
    code = 130
ignore_from_now()  # the outcome is decided and reported (job.core.signals says why)
# End here rather than through the interpreter's shutdown: once the exit code is reported,
# nothing the libraries' teardown does (TensorFlow's and its threads' take hundreds of
# milliseconds on a busy machine) may change it. Once, under load, a Ctrl-C run printed its
# line and still ended by SIGINT (-2) instead of 130; every write is complete or removed by now.
with contextlib.suppress(OSError):  # a reader that has gone (`| head`) changes nothing
    sys.stdout.flush()
    sys.stderr.flush()
os._exit(code)
