"""Patient ids on report outputs: pseudonymisation and safe file names.

With pseudonymisation on, every patient id in file names and text is replaced by a salted SHA-256
(salt from ``$CRS_PSEUDONYM_SALT``), so pages can be shared without the raw ids. A page's file name is
built from the (displayed) id but never becomes a path outside the output folder.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable

from pipeline.errors import UserError

SALT_ENV = "CRS_PSEUDONYM_SALT"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def pseudonym(patient_id: str, salt: str) -> str:
    """Salted SHA-256 of the id, shortened (64 bits): stable for a salt, not reversible without it."""
    return "PS-" + hashlib.sha256(f"{salt}\x00{patient_id}".encode()).hexdigest()[:16]


def id_mapper(pseudonymise: bool) -> Callable[[str], str]:
    """Identity, or the salted pseudonym; a missing salt is a one-line user error."""
    if not pseudonymise:
        return str
    salt = os.environ.get(SALT_ENV, "")
    if not salt:
        raise UserError(f"pseudonymisation needs a secret salt: set the environment variable {SALT_ENV}")
    return lambda pid: pseudonym(str(pid), salt)


def page_filename(display_id: str) -> str:
    """``<id>.html`` for an id made of letters, digits, ``.``, ``_``, ``-`` (not starting with ``.``).

    Any other id (slashes, spaces, ``..``) becomes a sanitised name plus a short digest of the id, so it
    stays inside the output folder and two ids never share a file.
    """
    if display_id and not display_id.startswith(".") and not _UNSAFE.search(display_id):
        return f"{display_id}.html"
    digest = hashlib.sha256(display_id.encode()).hexdigest()[:8]
    stem = _UNSAFE.sub("_", display_id).lstrip(".")[:60]
    return f"{stem}-{digest}.html" if stem else f"patient-{digest}.html"
