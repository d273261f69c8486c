"""``python -m rtest``: run the rtest binary installed with this package."""

import os
import sys

from rtest import find_rtest_bin


def main() -> None:
    rtest = find_rtest_bin()
    if sys.platform == "win32":
        import subprocess

        sys.exit(subprocess.call([rtest, *sys.argv[1:]]))
    # Replace this process: signals, exit status and the terminal are the
    # binary's own.
    os.execv(rtest, [rtest, *sys.argv[1:]])


if __name__ == "__main__":
    main()
