"""The ``afdplan`` command line: the only part of the package that prints.

Every bad input ends as one ``error: ...`` line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys

# Importing the command modules registers their commands on the app.
from afdplan.cli import calibrate_cmd, plan_cmd, sim_cmd, validate_cmd  # noqa: F401
from afdplan.cli.common import app, err
from afdplan.errors import InputError

__all__ = ["app", "main"]


def main() -> None:
    """Console entry point: run the app, turning bad input into one line and exit 2."""
    try:
        app()
    except InputError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("AFDPLAN_DEBUG"):
            raise
        err.print(
            f"error: internal error ({type(exc).__name__}: {exc}); rerun with AFDPLAN_DEBUG=1 "
            "and report it",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
