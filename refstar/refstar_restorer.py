"""The learned RefSTAR restorer behind the worker's ``Restorer`` interface.

- Built from a checkpoint (``RefSTARRestorer.from_checkpoint(path)``; EMA weights when present)
  or from an in-memory network (``RefSTARRestorer(net, work_size=...)``, per-job adaptation).
- ``torch.inference_mode``; device "auto" = cuda when available; on GPU the network runs in
  channels_last under bf16 autocast (fp16 where bf16 is unsupported); batches of ``batch_size``.
- The network works at its training size (``work_size``); crops of another size (the worker's
  512 or 256) are resized in (area / bicubic) and the output and mask resized back.
- Reference features are computed once per distinct reference and reused across frames. The
  cache key is, in order of preference, the caller's explicit ``ref_ids[i]`` (any hashable, e.g.
  ``(item, identity, rank)``), else a BLAKE2 digest of the reference row's bytes. Content keys,
  not ``data_ptr``: the worker stacks references into a fresh batch tensor for every call, so
  pointers never repeat, while equal pixels do. The cache is an LRU of ``cache_size`` entries.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import fields, is_dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from refstar.restorer import Restored, has_reference, resolve_device


def map_tensors(obj: Any, fn) -> Any:
    """Apply ``fn`` to every tensor inside a (nested) dataclass / tuple / list / dict."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        return replace(obj, **{f.name: map_tensors(getattr(obj, f.name), fn) for f in fields(obj)
                               if f.init})
    if isinstance(obj, (list, tuple)):
        out = [map_tensors(v, fn) for v in obj]
        return type(obj)(out) if not hasattr(obj, "_fields") else type(obj)(*out)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    return obj


def _cat(items: Sequence[Any]) -> Any:
    """Concatenate along the batch dimension structures that ``map_tensors`` understands."""
    first = items[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(items), 0)
    if is_dataclass(first) and not isinstance(first, type):
        return replace(first, **{f.name: _cat([getattr(i, f.name) for i in items])
                                 for f in fields(first) if f.init})
    if isinstance(first, (list, tuple)):
        out = [_cat([i[k] for i in items]) for k in range(len(first))]
        return type(first)(out) if not hasattr(first, "_fields") else type(first)(*out)
    if isinstance(first, dict):
        return {k: _cat([i[k] for i in items]) for k in first}
    return first


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    if x.shape[-1] > size:
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


class RefSTARRestorer:
    """``Restorer`` backed by a RefSTARNet (see the module doc for caching and sizes)."""

    name = "refstar"

    def __init__(self, net: torch.nn.Module, *, work_size: int | None = None, device: str = "auto",
                 batch_size: int = 16, precision: str = "auto", cache_size: int = 256):
        self.device = resolve_device(device)
        self.work_size = int(work_size or net.cfg.size)  # the size the net was trained at
        self.batch_size = int(batch_size)
        gpu = self.device.type == "cuda"
        if precision == "auto":
            precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if gpu else "fp32"
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
        self.net = net.to(self.device).eval()
        if gpu:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()
        self.encoded = 0  # references encoded so far (cache misses), for tests and reports

    @classmethod
    def from_checkpoint(cls, path: str, **kwargs) -> RefSTARRestorer:
        """Load ``path`` (checkpoint dir, its files, or a training run folder)."""
        from refstar.checkpoint import load_net

        net, meta = load_net(path, "cpu")
        size = kwargs.pop("work_size", None) or meta["extra"].get("train_size") or net.cfg.size
        return cls(net, work_size=int(size), **kwargs)

    def _autocast(self):
        if self.dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = _resize(x.to(self.device, torch.float32), self.work_size)
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x

    @staticmethod
    def _back_to_size(lq: torch.Tensor, lq_small: torch.Tensor, out_small: torch.Tensor,
                      size: int) -> torch.Tensor:
        """The net's output at the caller's crop size. Where the crop is larger than the
        working size, only the net's change is upsampled and added to the full-size input, so
        detail finer than the working size (a sharp face in a large crop) is never lost."""
        if out_small.shape[-1] >= size:
            return _resize(out_small.clamp(0, 1), size)
        change = F.interpolate(out_small - lq_small, size=(size, size), mode="bicubic",
                               align_corners=False)
        return (lq + change).clamp(0, 1)

    @staticmethod
    def ref_key(row: torch.Tensor) -> str:
        """Content key of one reference [3, S, S] (digest of its bytes as float32)."""
        data = row.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        return hashlib.blake2b(data, digest_size=16).hexdigest()

    def _features(self, ref: torch.Tensor, keys: list[Hashable]) -> Any:
        """RefFeatures for the rows of ``ref`` (batch order), encoding only unseen keys."""
        missing = [k for k in dict.fromkeys(keys) if k not in self._cache]
        if missing:
            rows = [ref[keys.index(k)] for k in missing]
            with self._autocast():
                feats = self.net.encode_reference(self._prep(torch.stack(rows)))
            self.encoded += len(missing)
            for j, k in enumerate(missing):
                self._cache[k] = map_tensors(feats, lambda t, j=j: t[j : j + 1])
        for k in keys:
            self._cache.move_to_end(k)
        feats = _cat([self._cache[k] for k in keys])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return feats

    def clear_cache(self) -> None:
        self._cache.clear()

    @torch.inference_mode()
    def restore(self, lq: torch.Tensor, ref: torch.Tensor | None,
                ref_ids: Sequence[Hashable] | None = None) -> Restored:
        """lq [B, 3, S, S], ref [B, 3, S, S] | None (rows of zeros = no reference), both RGB
        0..1 -> Restored(image [B, 3, S, S], mask [B, 1, S, S]) on lq's device, float32."""
        b, _, h, w = lq.shape
        if h != w:
            raise ValueError(f"crops must be square, got {h}x{w}")
        use = has_reference(ref, b)
        images, masks = [], []
        for i in range(0, b, self.batch_size):
            sl = slice(i, min(b, i + self.batch_size))
            x = self._prep(lq[sl])
            part = use[sl]
            feats = None
            if any(part):
                r = ref[sl]
                keys = [(ref_ids[i + j] if ref_ids is not None else self.ref_key(r[j]))
                        if part[j] else "__none__" for j in range(len(part))]
                # a "no reference" row is encoded once as zeros; the net masks it out itself
                feats = self._features(r, keys)
            with self._autocast():
                out = self.net(x, ref_feats=feats) if feats is not None else self.net(x)
            images.append(self._back_to_size(lq[sl].to(self.device, torch.float32), x,
                                              out.image.float(), h))
            masks.append(F.interpolate(out.mask.float(), size=(h, w), mode="bilinear",
                                       align_corners=False).clamp(0, 1))
        image = torch.cat(images).to(lq.device).contiguous()
        mask = torch.cat(masks).to(lq.device).contiguous()
        return Restored(image=image, mask=mask)


class GuidedThenNet:
    """``Restorer``: the guided restorer's result refined by a net adapted to refine it
    (``adapt_report(pre=guided.restore_bgr)``): guided transfers the reference's detail at the crop's full
    size, the net corrects what that pass gets wrong on this item's faces. References are
    ranked by guided (``pick_reference``); the mask is the larger of the two passes'.
    ``people``: the identities the net was adapted on (None: all); ``for_person`` gives the
    others guided alone, since a net adapted on other faces smooths a stranger's (the 17 real
    ``lq`` photos: sharpness 0.358 -> 0.337 through the net, 0.388 through guided)."""

    name = "refstar"

    def __init__(self, guided: Any, net: RefSTARRestorer, people: Iterable[int] | None = None):
        self.guided, self.net = guided, net
        self.people = None if people is None else frozenset(people)

    def for_person(self, identity: int) -> Any:
        """The restorer for a face of ``identity``: this one, or guided alone for a person the
        net never learned."""
        return self if self.people is None or identity in self.people else self.guided

    def pick_reference(self, lq: torch.Tensor, refs: torch.Tensor) -> int:
        return self.guided.pick_reference(lq, refs)

    def restore(self, lq: torch.Tensor, ref: torch.Tensor | None,
                ref_ids: Sequence[Hashable] | None = None) -> Restored:
        first = self.guided.restore(lq, ref)
        out = self.net.restore(first.image.clamp(0, 1), ref, ref_ids)
        return Restored(image=out.image, mask=torch.maximum(first.mask, out.mask))
