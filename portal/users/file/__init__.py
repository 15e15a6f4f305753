"""Authelia's YAML users file (users_database.yml): loading, watching, lookups, password writes.

    users:
      john:
        displayname: "John Doe"
        password: "$argon2id$v=19$m=65536,t=3,p=4$..."
        email: john@example.com        # or a list of addresses
        groups: [admins, dev]
        disabled: false

A user whose entry is unusable is locked out (or ignored) and logged once; the rest of the file
still loads. A new password replaces only that user's `password` value: everything else in the file
(comments, order, quoting, other users' edits made meanwhile) stays byte for byte, and the file is
replaced atomically. All file access and hashing runs in worker threads.

    document.py   reading, validating and indexing the file (check_users_file for validate-config)
    writing.py    the atomic password write
    backend.py    FileUserBackend: the UserBackend methods, lookups, loading and watching
"""

from __future__ import annotations

from portal.users.file.backend import FileUserBackend
from portal.users.file.document import check_users_file

__all__ = ["FileUserBackend", "check_users_file"]
