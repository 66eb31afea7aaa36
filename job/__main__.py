import sys

try:
    from job.cli import main

    code = main()
except KeyboardInterrupt:  # Ctrl-C before main() took over the signal (while starting)
    print("error: interrupted", file=sys.stderr)
    code = 130
sys.exit(code)
