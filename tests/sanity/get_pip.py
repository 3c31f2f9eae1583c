"""ansible-test's pip bootstrap, made from what Python ships and the package index.

ansible-test creates the virtual environments of its sanity tests without pip, then
runs a "get-pip" script to put its pinned pip into them. It downloads that script
from a host of its own, once, and keeps it as ~/.ansible/test/cache/get_pip_<pip
version>.py (get_pip_24_2.py for pip 24.2); a script already there is used as it is.
That host is not reachable from the test bed, so tests/test_sanity.py puts this file
there instead, in the home folder it gives ansible-test (.cache/sanity/<core>/home).

The interface is get-pip.py's: the arguments are pip install's (the pinned packages,
e.g. pip==24.2, and pip options), plus --no-setuptools and --no-wheel, which say not
to add those two (this script never does). It installs the pip that Python itself
carries (ensurepip: no network), then with it exactly the packages ansible-test asked
for, from the package index of pip's own configuration (ansible-test hands its pip
only HOME and PATH, so a proxy's CA certificate must be named in pip.conf).
"""

from __future__ import annotations

import subprocess
import sys

# get-pip.py's own options; pip install would reject them.
GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")


def main() -> None:
    """Put pip into this interpreter's environment, then install what was asked for."""
    arguments = [argument for argument in sys.argv[1:] if argument not in GET_PIP_ONLY]
    # A separate process: ensurepip clears the PIP_* variables of the process it runs in.
    subprocess.run([sys.executable, "-m", "ensurepip", "--default-pip"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "pip", "install", *arguments], check=True)


if __name__ == "__main__":
    main()
