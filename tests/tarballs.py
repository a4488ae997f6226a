"""Building tar members by hand, for hostile-artifact tests (tarfile's own writer refuses none of them)."""

from __future__ import annotations

import io
import tarfile


def add_member(tar: tarfile.TarFile, name: str, data: bytes = b"x", **attrs: object) -> None:
    """A member named ``name``; ``attrs`` set TarInfo fields such as ``type`` and ``linkname``."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
