"""Thin entry points over litlab.tasks and litlab.data.fetch."""

import os
import sys
from contextlib import contextmanager

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from litlab.errors import LitlabError, first_line

# As with `python -m`, a project's own modules in the working directory can be named by
# `_target_:` in its configs without installing the project.
if os.getcwd() not in sys.path:
    sys.path.append(os.getcwd())


def _message(err: BaseException) -> str:
    """The outermost user-facing message in the cause chain, else the root cause's first line."""
    chain = [err]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    for link in chain:
        if isinstance(link, LitlabError):
            return str(link)
    root = chain[-1]
    config_error = isinstance(root, HydraException | OmegaConfBaseException)
    return first_line(root) if config_error else f"{type(root).__name__}: {first_line(root)}"


@contextmanager
def user_errors():
    """Turn a user mistake into one `error:` line on stderr and exit status 2."""
    try:
        yield
    except (LitlabError, HydraException, OmegaConfBaseException) as err:
        print(f"error: {_message(err)}", file=sys.stderr)
        sys.exit(2)
