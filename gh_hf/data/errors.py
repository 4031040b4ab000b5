"""Data problems, reported like argument errors: one line naming the file or argument and what to do.

`DataSourceError` is a `ValueError`, so code that already handles bad values handles it; the
scripts print `data_error_message(error)` and exit with code 2.
"""

from __future__ import annotations

from typing import Any

from datasets import Image
from PIL import Image as PILImage

# How torch re-raises an exception from a DataLoader worker: its message becomes this header, the
# worker's traceback, and a last line "<module>.<ExceptionName>: <original message>".
_WORKER_HEADER = "in DataLoader worker process"


class DataSourceError(ValueError):
    """A dataset cannot be used as configured: a missing folder or file, a malformed split file, a
    Hub dataset that cannot be reached, a corrupt image, a split too small for the batch."""


class DataSourceNotFoundError(DataSourceError, FileNotFoundError):
    """A dataset's files are absent and no other source may be used."""


def data_error_message(error: DataSourceError) -> str:
    """The one-line message of `error`, also when a DataLoader worker raised it (without the traceback)."""
    message = str(error)
    if _WORKER_HEADER in message.split("\n", 1)[0]:
        last = message.rstrip().rsplit("\n", 1)[-1]
        message = last.split(f"{type(error).__name__}: ", 1)[-1]
    return message


def decode_image(value: Any, index: int) -> PILImage.Image:
    """Decodes one `Image(decode=False)` value ({"path", "bytes"}), naming the file and the sample on failure.

    Args:
        value: The undecoded value of the `image` column (a PIL image is returned as it is).
        index: The sample's index in the split, for the error message.

    Raises:
        DataSourceError: The image cannot be read or decoded.
    """
    if isinstance(value, PILImage.Image):
        return value
    try:
        return Image().decode_example(value)
    except (OSError, ValueError, SyntaxError) as error:  # PIL signals broken files with all three
        path = value.get("path") if isinstance(value, dict) else None
        where = f"image file {path}" if path else "the image bytes stored in the dataset"
        raise DataSourceError(
            f"sample index {index}: cannot decode {where} ({type(error).__name__}: {error}); "
            "replace the file or remove it from the split"
        ) from None


def undecoded_images(dataset: Any) -> Any:
    """`dataset` with its `image` column, if an `Image()`, left undecoded (decode with `decode_image`)."""
    feature = dataset.features.get("image")
    if isinstance(feature, Image) and feature.decode:
        return dataset.cast_column("image", Image(decode=False))
    return dataset
