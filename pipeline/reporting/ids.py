"""Patient ids on report outputs: keyed pseudonyms, safe page file names, paths kept in their folder.

Pseudonymisation replaces every patient id in file names and text by an HMAC-SHA-256 of the id keyed
by a secret of at least 32 random bytes (``$CRS_PSEUDONYM_KEY`` as hex, or a file named by
``$CRS_PSEUDONYM_KEY_FILE``; ``crs keygen`` writes one). A plain salted hash is not enough: ids are
short and guessable, so anyone with a weak salt could hash every candidate id and reverse the table.

A page's file name is built from the (displayed) id but is always a plain ASCII name of at most
:data:`MAX_NAME_BYTES` bytes inside the output folder, never a reserved name, and two distinct ids
never share a name, even on a case-insensitive file system (see :func:`page_filename`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

from pipeline.errors import UserError

KEY_ENV = "CRS_PSEUDONYM_KEY"
KEY_FILE_ENV = "CRS_PSEUDONYM_KEY_FILE"
#: The salt of earlier versions: refused with a message explaining the change (pseudonyms change too).
LEGACY_SALT_ENV = "CRS_PSEUDONYM_SALT"
KEY_BYTES = 32
#: 32 random bytes have ~30 distinct values; fewer than this means a typed or patterned key.
MIN_DISTINCT_KEY_BYTES = 16
PSEUDONYM_HEX = 16  # 64 bits displayed: no collision in practice below ~10^9 patients

#: Longest page file name (bytes, ASCII): far below the 255-byte limit of common file systems.
MAX_NAME_BYTES = 100
DIGEST_HEX = 16
_PLAIN_ID = re.compile(r"[A-Z0-9][A-Z0-9._-]*")  # kept as-is: no lowercase, so no case collisions
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # dots too: a digest name is one word before ".html"
#: Names the report folder uses itself, and Windows device names (reserved with any extension).
RESERVED_STEMS = frozenset(
    {"index", "model_card", "con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"{port}{n}" for port in ("com", "lpt") for n in "0123456789¹²³"}
)
_KEYGEN_HINT = f"run `crs keygen --out FILE` and set {KEY_FILE_ENV}=FILE"


# --------------------------------------------------------------------------- pseudonyms


def pseudonym(patient_id: str, key: bytes) -> str:
    """``PS-`` + 16 upper-case hex of HMAC-SHA-256(key, id): stable for a key, not reversible without it."""
    mac = hmac.new(key, str(patient_id).encode("utf-8", "surrogatepass"), hashlib.sha256)
    return "PS-" + mac.hexdigest()[:PSEUDONYM_HEX].upper()  # upper case: a plain page name


def parse_key(text: str, source: str) -> bytes:
    """The key bytes of hex ``text``; a short, non-hex or patterned key is a one-line error naming ``source``."""
    text = text.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise UserError(f"{source}: the pseudonym key must be hex digits ({_KEYGEN_HINT})") from None
    if len(key) < KEY_BYTES:
        raise UserError(f"{source}: the pseudonym key must be at least {2 * KEY_BYTES} hex digits "
                        f"({KEY_BYTES} random bytes; {_KEYGEN_HINT})")
    if len(set(key)) < MIN_DISTINCT_KEY_BYTES:
        raise UserError(f"{source}: the pseudonym key is not random (repeated pattern); {_KEYGEN_HINT}")
    return key


def load_key(environ: Mapping[str, str] | None = None) -> bytes:
    """The pseudonym key from ``$CRS_PSEUDONYM_KEY`` or the file named by ``$CRS_PSEUDONYM_KEY_FILE``."""
    env = os.environ if environ is None else environ
    inline, file = env.get(KEY_ENV, ""), env.get(KEY_FILE_ENV, "")
    if inline and file:
        raise UserError(f"set only one of {KEY_ENV} and {KEY_FILE_ENV}")
    if inline:
        return parse_key(inline, KEY_ENV)
    if file:
        try:
            text = Path(file).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "not a text file"
            raise UserError(f"{KEY_FILE_ENV}: cannot read the key file {file}: {reason}") from None
        return parse_key(text, f"{KEY_FILE_ENV} ({file})")
    if env.get(LEGACY_SALT_ENV):
        raise UserError(f"{LEGACY_SALT_ENV} is no longer used: pseudonyms are now keyed by a secret of "
                        f"{KEY_BYTES} random bytes (and change); {_KEYGEN_HINT}")
    raise UserError(f"pseudonymisation needs a secret key: {_KEYGEN_HINT} (or set {KEY_ENV} to the hex key)")


def id_mapper(pseudonymise: bool) -> Callable[[str], str]:
    """Identity, or the keyed pseudonym; a missing or weak key is a one-line user error."""
    if not pseudonymise:
        return str
    key = load_key()
    return lambda pid: pseudonym(str(pid), key)


def write_key(path: Path) -> str:
    """Write a new random hex key to ``path`` (mode 0600) and return it; an existing file is never overwritten."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UserError(f"--out {path}: the file exists; a key is never overwritten (pseudonyms would change)") from None
    except OSError as error:
        raise UserError(f"--out {path}: cannot create the key file: {error.strerror}") from None
    key = secrets.token_hex(KEY_BYTES)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    return key


# --------------------------------------------------------------------------- page file names


def _digest(display_id: str) -> str:
    return hashlib.sha256(display_id.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_HEX]


def is_reserved(stem: str) -> bool:
    """True for ``index``, ``model_card`` and Windows device names, in any case and with any extension."""
    return stem.lower() in RESERVED_STEMS or stem.split(".")[0].lower() in RESERVED_STEMS


def page_filename(display_id: str) -> str:
    """``<id>.html`` for a plain id (upper-case letters, digits, ``.``, ``_``, ``-``; starts with a letter or
    digit; at most 80 characters; not reserved), else ``<sanitised stem>~<digest>.html`` (the stem keeps
    letters, digits, ``_``, ``-``: ``stem~digest`` is never a reserved word).

    Plain names hold no lower-case letter and digest names hold one ``~``, which plain names cannot, so
    distinct ids never share a name even when case is ignored (the digest is 64 bits of SHA-256 of the
    id). Every name is ASCII, at most :data:`MAX_NAME_BYTES` bytes, never starts with ``.``.
    """
    display_id = str(display_id)
    if len(display_id) <= 80 and _PLAIN_ID.fullmatch(display_id) and not is_reserved(display_id):
        return f"{display_id}.html"
    stem = _UNSAFE.sub("_", display_id).lstrip("_-")[:60] or "patient"
    return f"{stem}~{_digest(display_id)}.html"


def page_href(filename: str) -> str:
    """The index's link to a page: relative and percent-encoded (no ``:`` or ``/``, so never a scheme)."""
    return quote(filename, safe="")


def page_path(out_dir: Path, filename: str) -> Path:
    """``out_dir / filename`` for one plain file name (no separator, no NUL, not ``.``/``..``); anything else
    is a bug. A lexical check: the folder is one the caller just created, so nothing in it is a link."""
    if filename in {"", ".", ".."} or "/" in filename or "\\" in filename or "\0" in filename:
        raise RuntimeError(f"a page file name escapes its folder {out_dir}")  # no id in the message
    return Path(out_dir) / filename
