"""Command-line interface ``phaseforge``."""
import sys


def main(argv=None) -> int:  # replaced below as commands land
    print("phaseforge: no command yet", file=sys.stderr)
    return 2
