"""The command line's option types and parser: checked values, one-line errors, and no torch."""

import argparse
import subprocess
import sys

import pytest

from vitssl.cli_parsing.arguments import (
    OneLineParser,
    fraction,
    non_negative_int,
    positive_float,
    positive_int,
)


def test_importing_the_parsing_modules_does_not_import_torch():
    """The benchmark scripts and `vitssl --help` parse options before any model exists."""
    check = ("import sys, vitssl.cli_parsing.arguments, vitssl.cli_parsing.shared_options, vitssl.bench.step_options; "
             "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:3]")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_building_the_whole_parser_does_not_import_torch():
    """`vitssl --help` and a mistyped option answer without loading torch (seconds on a small machine)."""
    check = ("import sys; from vitssl.cli import build_parser; build_parser(); "
             "assert 'torch' not in sys.modules, 'building the parser imported torch'")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("parse, text, value", [(positive_int, "3", 3), (non_negative_int, "0", 0),
                                                 (positive_float, "1e-3", 1e-3), (fraction, "1", 1.0)])
def test_good_values_parse(parse, text, value):
    assert parse(text) == value


@pytest.mark.parametrize("parse, text, message", [
    (positive_int, "0", "0 is out of range: use an integer >= 1"),
    (positive_int, "2.5", "'2.5' is not an integer: use an integer >= 1"),
    (non_negative_int, "-1", "-1 is out of range: use an integer >= 0"),
    (positive_float, "nan", "nan is not finite: use a finite number > 0"),
    (positive_float, "-0.1", "-0.1 is out of range: use a finite number > 0"),
    (fraction, "1.5", "1.5 is out of range: use a number in (0, 1]"),
])
def test_bad_values_are_refused_naming_the_range(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        parse(text)
    assert str(caught.value) == message


def test_a_parser_error_is_one_line_pointing_at_help(capsys):
    parser = OneLineParser(prog="vitssl x")
    parser.add_argument("--n", type=positive_int)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--n", "0"])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err == "vitssl x: error: argument --n: 0 is out of range: use an integer >= 1 (see vitssl x --help)\n"
