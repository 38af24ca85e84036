"""Keep credentials out of specs, logs and dry-run output.

Secrets reach a job only as Beaker secret *names* in the spec; Beaker injects the values when
the job starts. As a last guard, everything the launcher prints or submits is scanned for the
values of credential-looking environment variables of the launching process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

SENSITIVE_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
"""Environment variable names whose values are credentials: these travel only as secrets."""

USER_PLACEHOLDER = "{user}"
"""Replaced by the Beaker user name in secret names, e.g. `{user}_WANDB_API_KEY`."""

MIN_SECRET_LENGTH = 6
"""Shorter values (`1`, `true`) are too common to be told apart from ordinary text."""


def sensitive_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Name -> value of the credential-looking variables in `environ` (default: os.environ)."""
    environ = os.environ if environ is None else environ
    return {
        name: value
        for name, value in environ.items()
        if SENSITIVE_NAME.search(name) and len(value) >= MIN_SECRET_LENGTH
    }


def leaked_names(texts: Iterable[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """Names of credential variables whose values occur in any of `texts` (never the values)."""
    values = sensitive_values(environ)
    found: set[str] = set()
    for text in texts:
        found.update(name for name, value in values.items() if value in text)
    return sorted(found)
