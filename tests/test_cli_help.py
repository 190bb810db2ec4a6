"""Every option of every `vitssl` command explains itself in --help."""

import argparse

from vitssl.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, path: str = "vitssl"):
    """(command path, parser) for the parser and every sub-parser below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_of_every_command_has_help():
    parsers = dict(_parsers(build_parser()))
    assert {"vitssl eval knn", "vitssl benchmark step", "vitssl import"} <= parsers.keys()  # the walk reached them
    missing = [f"{path} {'/'.join(action.option_strings) or action.dest}"
               for path, parser in parsers.items() for action in parser._actions
               if not (action.help and action.help.strip()) and action.help != argparse.SUPPRESS]
    assert missing == []


def test_the_help_check_sees_a_missing_help():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quiet-one")
    assert [a.dest for _, p in _parsers(parser) for a in p._actions if not a.help] == ["quiet_one"]


def test_shared_options_mean_the_same_everywhere():
    """--device and --checkpoint are defined once: the same help wherever they appear."""
    helps: dict[str, set[str]] = {"--device": set(), "--num-workers": set()}
    for _, parser in _parsers(build_parser()):
        for action in parser._actions:
            for flag in set(action.option_strings) & helps.keys():
                helps[flag].add(action.help)
    assert all(len(texts) == 1 for texts in helps.values()), helps
