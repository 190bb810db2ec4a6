"""The `vitssl` sub-commands: each module turns one command's arguments into calls to the library
(pre-train, evaluate, analyse, demo, report, export, import, recipes). Nothing below this package
imports it; the library pieces the commands share live in `eval/`, `analysis/` and `engine/`.

The `*_command(s).py` modules hold each command's sub-parser (`add_parser(subparsers)`) and its
handler (`cmd_<name>(args)`, what it prints); they import no torch, so `vitssl --help` and a
mistyped option answer at once. `vitssl.cli` calls each `add_parser` and dispatches on COMMANDS."""
