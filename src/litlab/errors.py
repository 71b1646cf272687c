"""The one exception type for user mistakes, and how entry points print it: one line, exit 2."""

import sys
from contextlib import contextmanager


class LitlabError(ValueError):
    """Something the user can fix (bad override, missing data, wrong checkpoint, malformed file);
    a bad value, so code that expects ValueError from a net's arguments still catches it."""


def first_line(err: BaseException) -> str:
    """An exception's first line of text, or its type's name when it has none."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def message(err: BaseException) -> str:
    """The outermost user-facing message in the cause chain, else the root cause's first line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

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
    from hydra.errors import HydraException  # not on `import litlab`: the nets need no Hydra
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except (LitlabError, HydraException, OmegaConfBaseException) as err:
        print(f"error: {message(err)}", file=sys.stderr)
        sys.exit(2)
