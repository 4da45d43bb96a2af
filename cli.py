"""The one guard of every command-line entry point (README "Bad input"): a refused input (ValueError, a
non-finite loss, an unreadable or unwritable path) is one `error: ...` line on stderr and exit code 2,
never a traceback; argparse's own errors exit 2 too (runtime.OneLineParser)."""
import functools
import sys

EXIT_REFUSED = 2
REFUSALS = (ValueError, FloatingPointError, OSError)


def guard(main):
    """Decorate a CLI's main(argv=None): refusals become one line and exit code 2."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except REFUSALS as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_REFUSED)
    return wrapped
