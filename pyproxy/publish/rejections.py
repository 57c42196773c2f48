"""Why an upload is refused: one-line messages safe for an HTTP reason phrase, in the public
index's wording, and the refusals the upload handler raises before the form is validated."""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "MAX_FORM_BYTES",
    "UploadRejected",
    "file_part_rejected",
    "form_too_large",
    "missing_file",
    "reason_phrase",
]

# pyproxy's own limit on the form's fields together: the long description is most of it (the
# core metadata cap in `archives` leaves room for a description this large)
MAX_FORM_BYTES: Final = 16 * 1024 * 1024
_MAX_MESSAGE: Final = 1000


def _one_line(text: str) -> str:
    """Control characters escaped (aiohttp refuses CR/LF in a reason), length bounded."""
    text = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def reason_phrase(text: str) -> str:
    """`text` as an HTTP reason phrase must be: ISO-8859-1, unmappable characters as '?'."""
    return text.encode("iso-8859-1", "replace").decode("iso-8859-1")


class UploadRejected(Exception):
    """message: one line, safe for an HTTP reason phrase; status: 400 unless said otherwise;
    kind: why, as a label of metrics.UPLOAD_REJECTIONS (None: not yet known; the web handler
    counts it as "malformed"). Whoever knows the most specific kind sets it first."""

    def __init__(self, message: str, status: int = 400, *, kind: str | None = None) -> None:
        message = _one_line(message)
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind

    @property
    def reason(self) -> str:
        return reason_phrase(self.message)


def file_part_rejected(field: str) -> UploadRejected:
    """A field other than `content`/`gpg_signature` arrived as a file part."""
    return UploadRejected(f"{field}: Should not be a tuple.")


def missing_file() -> UploadRejected:
    return UploadRejected("Upload payload does not have a file.")


def form_too_large() -> UploadRejected:
    """The fields other than the file passed MAX_FORM_BYTES."""
    return UploadRejected(
        "Metadata too large. The upload form's fields (the description included) may hold at"
        f" most {MAX_FORM_BYTES // (1024 * 1024)} MiB together.",
        kind="too_large",
    )
