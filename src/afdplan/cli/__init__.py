"""The ``afdplan`` command line: the only part of the package that prints.

Every bad input ends as one ``error: ...`` line on stderr and exit code 2. No Python
warning reaches stderr: a numerical warning (overflow, invalid value) means a number
would be wrong, so it is raised and reported as an internal error instead of printed;
other warnings from libraries are not the user's business and are silenced.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

import typer

from afdplan.cli.common import app, err
from afdplan.errors import InputError

__all__ = ["app", "load_commands", "main"]

# Importing a command module registers its commands on the app. Typer builds the options
# of every registered command at start-up, so a run imports only the module of the command
# it runs; help and unknown commands import them all, in this order.
COMMAND_MODULES = {
    "calibrate": "calibrate_cmd",
    "capacity": "capacity_cmd",
    "deploy": "deploy_cmd",
    "plan": "plan_cmd",
    "presets": "plan_cmd",
    "simulate": "sim_cmd",
    "sweep": "sim_cmd",
    "validate": "validate_cmd",
    "report": "validate_cmd",
}


def load_commands(argv: list[str] | None = None) -> None:
    """Register the command that ``argv`` runs, or every command."""
    words = [a for a in (argv or []) if not a.startswith("-")]
    wanted = COMMAND_MODULES.get(words[0]) if words else None
    for module in dict.fromkeys([wanted] if wanted else COMMAND_MODULES.values()):
        importlib.import_module(f"afdplan.cli.{module}")


def _fail(message: str, code: int) -> None:
    err.print(f"error: {' '.join(message.split())}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)


def _click_exceptions():
    """click's exception classes (typer ≥ 0.22 vendors click as ``typer._click``)."""
    try:
        from typer._click import exceptions
    except ImportError:  # older typer on the external click package
        from click import exceptions
    return exceptions


def main() -> None:
    """Console entry point: run the app, turning bad input into one line and exit 2."""
    # afdplan's arrays are small: a multi-threaded BLAS only adds overhead (a tiny np.dot
    # was measured 1,500× slower with OpenBLAS's default threads). Set before numpy loads;
    # worker processes inherit it; a user's own setting wins.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    click_exc = _click_exceptions()
    load_commands(sys.argv[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", RuntimeWarning)
        try:
            code = app(prog_name="afdplan", standalone_mode=False)
            if isinstance(code, int) and code:
                sys.exit(code)
        except click_exc.NoArgsIsHelpError as exc:
            err.print(exc.format_message(), markup=False, highlight=False)
            sys.exit(2)
        except click_exc.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "afdplan"
            _fail(f"{exc.format_message()} (see {command} --help)", 2)
        except typer.Abort:
            sys.exit(130)
        except InputError as exc:
            _fail(str(exc), 2)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
            _fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc), 2)
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as exc:
            if os.environ.get("AFDPLAN_DEBUG"):
                raise
            _fail(
                f"internal error ({type(exc).__name__}: {exc}); rerun with AFDPLAN_DEBUG=1 "
                "and report it",
                1,
            )


if __name__ == "__main__":
    main()
