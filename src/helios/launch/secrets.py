"""Keep credentials out of specs, logs and dry-run output.

Secrets reach a job only as Beaker secret *names* in the spec; Beaker injects the values when
the job starts. Around that rule the launcher guards three ways:

- by name: an env var whose name looks like a credential (`sensitive_name`: `TOKEN`, `KEY`,
  `SECRET`, `PASS`, `PASSWD`, `PWD`, `AUTH`, `CREDS`, ...) is never a plain `--env` value;
- by value: the values of the launching process's own credential-looking variables
  (`sensitive_values`) must not occur in anything the launcher prints, logs or submits
  (`leaked_names` finds them, `redact` blanks them, `RedactSecrets` does so for log records);
- in URLs: user names, passwords and query strings are cut from URLs the launcher records
  (`strip_url`), and a command that carries a URL with credentials is refused
  (`url_credentials`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit

USER_PLACEHOLDER = "{user}"
"""Replaced by the Beaker user name in secret names, e.g. `{user}_WANDB_API_KEY`."""

MIN_SECRET_LENGTH = 6
"""Shorter values (`1`, `true`) are too common to be told apart from ordinary text."""

_SECRET_PARTS = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|APIKEY|PRIVATEKEY|SIGNATURE",
    re.IGNORECASE,
)
"""Credential words that mean the same anywhere inside a name."""
SECRET_WORDS = frozenset(
    {"KEY", "KEYS", "PASS", "PWD", "PW", "AUTH", "OAUTH", "CRED", "CREDS", "SIG", "PAT", "JWT"}
)
"""Short credential words, matched as whole words of a name (`DB_PASS`, not `COMPASS`)."""
NOT_SECRET = frozenset({"PWD", "OLDPWD"})
"""Names that match the rules but are not credentials: the shell's working directories."""

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z0-9]+|[A-Z]+")
"""The words of a name: split at `_`, `-`, `.` and case changes (`HTTPAuth`: HTTP, Auth)."""
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)
_REDACTED = "<redacted {}>"


def sensitive_name(name: str) -> bool:
    """Whether an env var (or URL query parameter) of this name holds a credential.

    `WANDB_API_KEY`, `DB_PASS`, `APP_PWD`, `API_AUTH`, `SERVICE_CREDS`, `dbPassword`, `sig`
    do; `PWD`, `GIT_AUTHOR_NAME`, `KEYBOARD_LAYOUT`, `COMPASS_DIR` do not.
    """
    if name.upper() in NOT_SECRET:
        return False
    if _SECRET_PARTS.search(name):
        return True
    return any(word.upper() in SECRET_WORDS for word in _WORD.findall(name))


def sensitive_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Name -> value of the credential-looking variables in `environ` (default: os.environ)."""
    environ = os.environ if environ is None else environ
    return {
        name: value
        for name, value in environ.items()
        if sensitive_name(name) and len(value.strip()) >= MIN_SECRET_LENGTH
    }


def leaked_names(texts: Iterable[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """Names of credential variables whose values occur in any of `texts` (never the values)."""
    values = sensitive_values(environ)
    found: set[str] = set()
    for text in texts:
        found.update(name for name, value in values.items() if value in text)
    return sorted(found)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with credential values replaced by `<redacted NAME>` and URLs stripped."""
    # longest first, so a value that contains another is replaced whole
    for name, value in sorted(sensitive_values(environ).items(), key=lambda kv: -len(kv[1])):
        text = text.replace(value, _REDACTED.format(name))
    return _URL.sub(lambda m: strip_url(m.group(0)), text)


class RedactSecrets(logging.Filter):
    """A logging filter that passes every record with `redact` applied to its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message if it holds a credential; never drop it."""
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def strip_url(url: str) -> str:
    """`url` without user name, password, query string or fragment.

    `https://user:tok@github.com/org/repo.git?token=X#y` becomes
    `https://github.com/org/repo.git`. Text that is not a `scheme://` URL is returned as is.
    """
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


def url_credentials(text: str) -> list[str]:
    """What in `text` is a credential carried by a URL (never the credential itself).

    A password (`https://user:pw@host`), any user name of an http(s) URL (a token is often
    passed as one), and query parameters with credential-like names (`?token=`, `?sig=`,
    `X-Amz-Signature=`).
    """
    found: list[str] = []
    for match in _URL.finditer(text):
        parts = urlsplit(match.group(0))
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else None
        shown = strip_url(match.group(0))
        if userinfo is not None and (":" in userinfo or parts.scheme in ("http", "https")):
            found.append(f"the user name or password of {shown}")
        names = sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)})
        found += [f"the query parameter {k!r} of {shown}" for k in names if sensitive_name(k)]
    return found
