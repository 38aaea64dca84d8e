"""The teacher as a worker: what a PARROT run's driver, or each of its Ray actors, calls.

PARROT's jobs carry messages whose image slots name files of the run folder's image store (the
images were normalised there at ingest). :class:`StoredMessages` turns those names into loaded
images just before a request; :class:`StoredTeacher` pairs that with a teacher backend, so a
Ray actor reads the images itself from the (shared) run folder instead of receiving pixels from
the driver.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from ..backends import Backend, Generation, SamplingParams, backend_from_options
from ..images import PreparedImage
from .data import ImageStore

# Pairs share images across jobs (both orders, several samples, re-prediction); a small LRU
# saves re-reading them without holding a dataset's pixels.
_CACHED_IMAGES = 128


class StoredMessages:
    """Messages built with stored image names -> messages holding :class:`PreparedImage` objects."""

    def __init__(self, store: ImageStore):
        self.store = store
        self._images: OrderedDict[str, PreparedImage] = OrderedDict()

    def image(self, rel: str) -> PreparedImage:
        img = self._images.get(rel)
        if img is None:
            img = self.store.open(rel)
            self._images[rel] = img
            if len(self._images) > _CACHED_IMAGES:
                self._images.popitem(last=False)
        else:
            self._images.move_to_end(rel)
        return img

    def materialize(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """OSError when a stored image cannot be read."""
        out = []
        for msg in messages:
            content = msg["content"]
            if isinstance(content, str):
                out.append(msg)
                continue
            parts = [{"type": "image", "image": self.image(p["image"])} if p["type"] == "image" else p
                     for p in content]
            out.append({"role": msg["role"], "content": parts})
        return out


async def generate_stored(images: StoredMessages, backend: Backend, messages: list[dict[str, Any]],
                          params: SamplingParams) -> Generation:
    """One teacher call for a job's messages; an unreadable stored image is a failed generation
    (with the reason), not an exception, so the job is recorded and retried on rerun."""
    try:
        materialized = images.materialize(messages)
    except OSError as exc:
        return Generation(text=None, error=f"stored image unreadable: {exc}")
    return await backend.agenerate(materialized, params)


class StoredTeacher:
    """What each Ray actor of ``parrot --executor ray`` holds: the teacher backend, built from the
    same options as a local run, and the image store of the run folder ``out``."""

    def __init__(self, out: str, max_pixels: int | None, backend_options: dict[str, Any]):
        self.images = StoredMessages(ImageStore(Path(out), max_pixels))
        self.backend = backend_from_options(**backend_options)

    async def agenerate_stored(self, messages: list[dict[str, Any]], params: SamplingParams) -> Generation:
        return await generate_stored(self.images, self.backend, messages, params)

    async def aclose(self) -> None:
        await self.backend.aclose()
