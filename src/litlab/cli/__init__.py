"""Thin entry points over litlab.tasks and litlab.data.fetch."""

import sys
from contextlib import contextmanager

from hydra.errors import HydraException

from litlab.errors import LitlabError


def _message(err: BaseException) -> str:
    """The outermost user-facing message in the cause chain, else the root cause's first line."""
    chain = [err]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    for link in chain:
        if isinstance(link, LitlabError):
            return str(link)
    root = chain[-1]
    text = (str(root).strip().splitlines() or [repr(root)])[0]
    return text if isinstance(root, HydraException) else f"{type(root).__name__}: {text}"


@contextmanager
def user_errors():
    """Turn a user mistake into one `error:` line on stderr and exit status 2."""
    try:
        yield
    except (LitlabError, HydraException) as err:
        print(f"error: {_message(err)}", file=sys.stderr)
        sys.exit(2)
