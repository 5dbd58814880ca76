"""Where an item's outputs go (``output.layout``).

- ``items`` (the default): everything of an item in ``OUT/<item-id>/``: ``restored.<ext>`` (a
  video) or ``restored/`` (an album), ``refs/``, ``manifest.json``, ``report.html``, ``_DONE``.
- ``mirror``: the restored media take the input's own names in a tree that mirrors the input
  (``IN/a/b/clip.mp4`` -> ``OUT/a/b/clip.mp4``; album ``IN/photos/x.jpg`` ->
  ``OUT/photos/x.jpg``), with ``output.suffix`` before each file's extension
  (``clip_restored.mp4``); the item's refs, manifest, report and ``_DONE`` go to a sidecar folder
  beside them, ``OUT/a/b/clip.mp4.refstar/`` (album: ``OUT/photos.refstar/``). One sidecar per
  input: a run with other settings replaces the outputs (the ``_DONE`` names the item id it
  completed, so a changed input or config is redone, an unchanged one is skipped).

Paths are built with ``storage.join``, so an input name that could not be an output key fails
its item with the reason instead of escaping the output folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from worker import storage

SIDECAR = ".refstar"
RESTORED = "restored"  # the media's name inside an item folder (staging, and the items layout)


@dataclass(frozen=True)
class Layout:
    """The output places of one item. ``rel``: the input's path relative to the collection it
    came from ("/"-separated; its bare name when it was given on its own)."""

    out_root: str
    rel: str
    mirror: bool = False
    suffix: str = ""
    folder: bool = False  # the input is a folder of images (an album), not one file

    def final_dir(self, iid: str) -> str:
        """The item folder (items layout) or sidecar (mirror) that holds ``_DONE``."""
        if not self.mirror:
            return storage.join(self.out_root, iid)
        return storage.join(self.out_root, self.rel + SIDECAR)

    def target(self, staged: str) -> str | None:
        """Where a staged media file goes (``restored.<ext>`` or ``restored/<name>``, relative to
        the staging folder); None when it stays in the item folder (items layout)."""
        if not self.mirror:
            return None
        if staged.startswith(RESTORED + "/"):
            name = staged[len(RESTORED) + 1:]
            base = self.rel if self.folder else str(PurePosixPath(self.rel).parent)
            return storage.join(self.out_root, *([] if base in ("", ".") else [base]), self.suffixed(name))
        if staged.startswith(RESTORED + "."):
            return storage.join(self.out_root, self.suffixed(self.rel))
        return None

    def suffixed(self, rel: str) -> str:
        p = PurePosixPath(rel)
        return str(p.with_name(f"{p.stem}{self.suffix}{p.suffix}")) if self.suffix else rel

    def output_ref(self, staged: str) -> str:
        """How the manifest names a media output: relative to the item folder."""
        if not self.mirror:
            return staged
        up = "../" * len(PurePosixPath(self.rel + SIDECAR).parts)
        if staged.endswith("/"):  # an album's folder
            place = self.rel if self.folder else str(PurePosixPath(self.rel).parent)
            return up + ("" if place in ("", ".") else place + "/")
        return up + storage.relative_to(self.out_root, self.target(staged))

    def media_place(self) -> str | None:
        """The restored video, album folder or image (mirror layout), None in the items layout."""
        if not self.mirror:
            return None
        return storage.join(self.out_root, self.rel if self.folder else self.suffixed(self.rel))

    def check_not_input(self, src: str) -> None:
        """Refuse a mirror layout that would write the restored media over the input itself
        (the output folder is the input's own, with no suffix)."""
        place = self.media_place()
        if place is None or self.suffix:
            return
        same = (place == src.rstrip("/") if storage.is_s3(src)
                else Path(place).resolve() == Path(src).resolve())
        if same:
            raise storage.StorageError(f"refusing to write {place} over the input itself (mirror "
                                       "layout into the input's own folder): give another output "
                                       "folder or a --suffix")

    def done_by(self, iid: str) -> bool:
        """Whether the item folder's ``_DONE`` completes this very item (mirror: a sidecar's
        ``_DONE`` may name an earlier item id of the same input, made with other settings)."""
        marker = storage.join(self.final_dir(iid), storage.DONE_MARKER)
        if not self.mirror:
            return storage.exists(marker)
        try:
            return json.loads(storage.read_bytes(marker)).get("item_id") == iid
        except (storage.ObjectNotFound, ValueError):
            return False


def layout_for(out_root: str, rel: str, output_cfg, folder: bool) -> Layout:
    """The layout ``output.layout`` / ``output.suffix`` give an input at ``rel``."""
    return Layout(out_root, rel.strip("/"), output_cfg.layout == "mirror", output_cfg.suffix, folder)


def check_unique(named: list[tuple[str, str]]) -> None:
    """Refuse a mirror layout where two inputs would get the same output names: ``named`` is
    ``[(input URI, rel)]``. Raises ConfigError naming them."""
    from worker.config import ConfigError

    seen: dict[str, str] = {}
    for uri, rel in named:
        key = rel.strip("/")
        if key in seen and seen[key] != uri:
            raise ConfigError(f"mirror layout: {seen[key]} and {uri} would both be written as {key}; "
                              "restore them into different output folders, or give the folder "
                              "that holds both (refstar run -i) so that their paths tell them apart")
        seen[key] = uri


def input_name(uri: str) -> str:
    """The bare name of an input (its ``rel`` when it was given on its own)."""
    return PurePosixPath(uri.rstrip("/").split("://", 1)[-1]).name or "item"
