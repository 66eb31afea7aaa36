import signal
import sys

try:
    from job.cli import main

    code = main()
except KeyboardInterrupt:  # Ctrl-C before main() took over the signal (while starting)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("error: interrupted", file=sys.stderr)
    code = 130
# The outcome is decided and reported: a signal that arrives while Python shuts down must not
# turn a clean exit (or a reported 130) into a death by signal, which is how an uncaught
# KeyboardInterrupt ends a process.
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.exit(code)
