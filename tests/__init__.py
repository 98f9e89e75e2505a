"""effnas's tests, one folder per package they test (``tests/nas/search`` tests ``nas.search``)."""

from pathlib import Path

#: The repository's root: configs/, bench/ and the packages.
REPO = Path(__file__).resolve().parents[1]
