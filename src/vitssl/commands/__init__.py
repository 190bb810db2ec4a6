"""The `vitssl` sub-commands: each module turns one command's arguments into calls to the library
(pre-train, evaluate, analyse, demo, report, export, import, recipes). Nothing below this package
imports it; the library pieces the commands share live in `eval/`, `analysis/` and `engine/`."""
