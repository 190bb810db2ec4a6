"""`vitssl` command line: parse arguments, load config, call the library. No logic of its own.

Each command's sub-parser and handler live beside it in `vitssl.commands` (torch-free modules, so
`vitssl --help` stays fast); options several commands share are in `vitssl.cli_parsing`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

from vitssl.cli_parsing.arguments import OneLineParser
from vitssl.commands import (
    analyze_command,
    benchmark_command,
    checkpoint_commands,
    demo_command,
    detection,
    embed,
    eval_command,
    info_commands,
    pretrain_command,
    transfer,
)
from vitssl.commands import (
    data as data_command,
)
from vitssl.commands.stops import signals_stop_the_command, stopped_line


def _user_errors() -> tuple[type[BaseException], ...]:
    from vitssl.config import ConfigError
    from vitssl.engine.checkpoint import CheckpointError
    from vitssl.engine.trainer import TrainingDiverged, TrainingInterrupted

    return (ConfigError, CheckpointError, TrainingDiverged, TrainingInterrupted, OSError, ValueError, RuntimeError)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="vitssl", description="Self-supervised pre-training of vision transformers.")
    sub = parser.add_subparsers(dest="command", required=True, help="the command (each has its own --help)")
    demo_command.add_parser(sub)
    pretrain_command.add_parser(sub)
    eval_command.add_parser(sub)
    analyze_command.add_parser(sub)
    benchmark_command.add_parser(sub)
    data_command.add_parser(sub)  # data pack
    detection.add_parser(sub)  # data shapes-coco, eval detection, eval segmentation --head/--finetune
    transfer.add_parser(sub)  # eval transfer
    embed.add_parser(sub)  # embed
    checkpoint_commands.add_parsers(sub)  # export, import
    info_commands.add_parsers(sub)  # presets, recipes, report, config
    return parser


COMMANDS = {"data": data_command.cmd_data, "embed": embed.cmd_embed, "pretrain": pretrain_command.cmd_pretrain, "eval": eval_command.cmd_eval, "demo": demo_command.cmd_demo,
            "presets": info_commands.cmd_presets, "config": info_commands.cmd_config,
            "analyze": analyze_command.cmd_analyze, "benchmark": benchmark_command.cmd_benchmark,
            "export": checkpoint_commands.cmd_export, "recipes": info_commands.cmd_recipes,
            "report": info_commands.cmd_report, "import": checkpoint_commands.cmd_import}


OVERRIDE = re.compile(r"^[A-Za-z_][\w.\-]*=")


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse as argparse does, but let `key=value` overrides follow options as well as precede them
    (`pretrain --config X a.b=1 --out R c.d=2`): argparse takes the first run of positionals only
    and calls the rest unrecognised."""
    args, extra = parser.parse_known_args(argv)
    late = [token for token in extra if OVERRIDE.match(token)]
    unknown = [token for token in extra if not OVERRIDE.match(token)]
    if unknown or (late and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if late:
        args.overrides = [*(args.overrides or []), *late]
    return args


def main(argv: list[str] | None = None) -> int:
    from vitssl.engine.logging import setup_console_logging
    from vitssl.engine.outputs import find_os_error, os_error_line

    args = parse_arguments(build_parser(), argv)
    setup_console_logging()
    started = time.perf_counter()
    try:
        with signals_stop_the_command():  # SIGTERM, SIGHUP: a stop, as Ctrl-C is
            return (getattr(args, "handler", None) or COMMANDS[args.command])(args)
    except KeyboardInterrupt as stop:
        if os.environ.get("VITSSL_DEBUG"):
            raise
        from vitssl.commands.summary import duration

        print(stopped_line(stop, args, duration(time.perf_counter() - started)), file=sys.stderr)
        return 2
    except _user_errors() as e:
        if os.environ.get("VITSSL_DEBUG"):
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        cause = e if isinstance(e, OSError) else find_os_error(e) if type(e) is RuntimeError else None
        if cause is not None:  # torch reports a failed write as a RuntimeError around the OSError
            message = os_error_line(cause)
        stop = type(e).__name__ == "TrainingInterrupted"  # a stop asked for by signal: saved, resumable
        print(f"vitssl: {'' if stop else 'error: '}{message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
