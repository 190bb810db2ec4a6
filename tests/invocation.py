"""Running `vitssl` in-process the way a user's shell would, for the invalid-invocation tables."""

from __future__ import annotations

import hashlib
import traceback
from pathlib import Path

import pytest

from vitssl.cli import main


def snapshot(root: Path, skip: str | None = None) -> dict[str, str]:
    """Every file below `root` (except under a folder named `skip`) with the SHA-256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and (skip is None or skip not in p.parts)}


def invoke(argv: list[str]) -> int:
    """`vitssl ARGV`'s exit code; a traceback fails the test with it shown."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    except BaseException:  # noqa: BLE001 - shown in the failure, not swallowed
        pytest.fail(f"traceback from vitssl {' '.join(argv)}:\n{traceback.format_exc()}")
    return code if isinstance(code, int) else 2 if code else 0
