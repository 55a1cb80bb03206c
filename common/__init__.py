"""What every package shares, in one home: atomic file writing, the error
reported as one line, image preprocessing, palettes, downloads and the
command-line layer. This package imports none of the project's others, so
every import arrow points into it and none out (tests/test_imports.py)."""
