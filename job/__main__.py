import sys

from job.signals import ignore_from_now

try:
    from job.cli import main

    code = main()
except KeyboardInterrupt:  # Ctrl-C before main() took over the signal (while starting)
    ignore_from_now()
    print("error: interrupted", file=sys.stderr)
    code = 130
ignore_from_now()  # the outcome is decided and reported (job.signals says why)
sys.exit(code)
