"""What the tests share: fixtures and factories (`services`, `factories`), helpers by subject, and where things are."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent  # tests/: its data (fiware/, schemas/) beside the kinds
ROOT = TESTS.parent  # the project
