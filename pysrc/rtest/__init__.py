"""rtest: run a pytest suite on many workers.

This package only carries the ``rtest`` binary (installed into the
environment's scripts directory); ``python -m rtest`` runs it.
"""

import os
import sys
import sysconfig


def find_rtest_bin() -> str:
    """The path of the ``rtest`` binary installed with this package."""
    exe = "rtest" + (sysconfig.get_config_var("EXE") or "")
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [
        # The environment this package is installed in (a venv, pipx, uv).
        sysconfig.get_path("scripts"),
        # `pip install --user`.
        sysconfig.get_path("scripts", scheme=_user_scheme()) if _user_scheme() else None,
        # `pip install --target DIR`: DIR/bin beside DIR/rtest.
        os.path.join(os.path.dirname(here), "bin"),
    ]
    for directory in candidates:
        if directory:
            path = os.path.join(directory, exe)
            if os.path.isfile(path):
                return path
    raise FileNotFoundError(
        "the rtest binary is not where this package was installed (looked in: %s); "
        "reinstall it with `pip install --force-reinstall rtest`"
        % ", ".join(d for d in candidates if d)
    )


def _user_scheme():
    if sys.version_info >= (3, 10):
        return sysconfig.get_preferred_scheme("user")
    if os.name == "nt":
        return "nt_user"
    if sys.platform == "darwin" and sys._framework:  # type: ignore[attr-defined]
        return "osx_framework_user"
    return "posix_user"
