"""Command lines (docs/running.md "Bad input"): a refused input (ValueError, a non-finite loss, an unreadable or
unwritable path) is one `error: ...` line on stderr and exit code 2, never a traceback; a training script's
flags are generated from its config dataclass, each with its help, choices and default.
"""
import argparse
import functools
import json
import sys
import typing
from dataclasses import MISSING, field, fields

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


def opt(default, help: str, choices=None):
    """A config field with its --help text (and allowed values); None always means "derived: see help"."""
    return field(default=default, metadata={"help": help, "choices": choices})


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one `error: ...` line (exit 2), like every other refusal here."""

    def error(self, message):
        print(f"error: {message}: see --help", file=sys.stderr)
        sys.exit(EXIT_REFUSED)


def _base_type(t):
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return args[0] if args else t


def parse_config(cls, argv=None, doc: str = ""):
    """argparse generated from the dataclass fields, with each field's help, choices and default (the
    choices are checked by the config's validate(), with the same one-line error as every other field);
    --config run.json supplies defaults; unknown flags and unknown JSON keys are errors."""
    p = OneLineParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="JSON file with any of the fields below")
    for f in fields(cls):
        name, kind = "--" + f.name.replace("_", "-"), _base_type(f.type)
        default = f.default if f.default is not MISSING else f.default_factory()
        choices = f.metadata.get("choices")
        text = f.metadata.get("help", "") + (f"; one of {', '.join(map(str, choices))}" if choices else "") + \
            f" (default: {default})"
        if kind is bool:
            p.add_argument(name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif kind is list:
            p.add_argument(name, action="append", default=None, help=text + "; repeatable")
        else:
            p.add_argument(name, type=kind, default=None, help=text)
    args = vars(p.parse_args(argv))
    values, config_path = {}, args.pop("config")
    if config_path:
        with open(config_path) as fh:
            values = json.load(fh)
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            p.error(f"{config_path}: unknown keys {sorted(unknown)}")
    values.update({k: v for k, v in args.items() if v is not None})
    return cls(**values)
