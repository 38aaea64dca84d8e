"""Zero-shot detection (Grounding DINO) and box-prompted segmentation (SAM) with transformers.

Both models load lazily, on first use, through the same calls a real checkpoint needs
(``AutoProcessor`` + ``AutoModelForZeroShotObjectDetection``; ``SamProcessor`` + ``SamModel``),
and loaded models are cached per (id, device) so a batch of images pays the load once.

Grounding DINO scores every query box against every *token* of one text prompt made of all
phrases (``"left hand. sign text."``). The processor's own post-processing turns the tokens above
``text_threshold`` back into text, which yields sub-word fragments that cannot be traced to the
phrase (and so to the critique dimension) they came from. Here each phrase's token span is
known from the tokenizer's offsets, so every box is attributed to the phrase whose tokens it
matches best. ``box_threshold`` applies to a box's best token, as in Grounding DINO;
``text_threshold`` to its best token inside the chosen phrase.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"
DEFAULT_SEGMENTER = "facebook/sam-vit-base"
_GROUNDING_TYPES = ("grounding-dino", "mm-grounding-dino")


class ModelLoadError(RuntimeError):
    """A detector or segmenter could not be loaded (wrong id, no network for a hub id, bad folder)."""


@dataclass
class Detection:
    """One box for one phrase: pixel corners ``(x0, y0, x1, y1)`` inside the image, and its score."""

    phrase_index: int
    box: tuple[float, float, float, float]
    score: float


def resolve_device(device: str | None) -> str:
    if device in (None, "", "auto"):
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    return str(device)


_CACHE: dict[tuple[str, str, str], Any] = {}
_CACHE_LOCK = threading.Lock()


def _cached(kind: str, model_id: str, device: str, build: Any) -> Any:
    key = (kind, model_id, device)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


def clear_model_cache() -> None:
    """Forget loaded detectors and segmenters (frees their memory once nothing else holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _box_iou(a: Any, b: Any) -> Any:
    import torch

    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def _nms(boxes: Any, scores: Any, iou: float, limit: int) -> list[int]:
    """Greedy non-maximum suppression (written out to avoid needing torchvision's kernels)."""
    order = scores.argsort(descending=True).tolist()
    keep: list[int] = []
    for i in order:
        if len(keep) >= limit:
            break
        if keep and float(_box_iou(boxes[i : i + 1], boxes[keep]).max()) > iou:
            continue
        keep.append(i)
    return keep


class GroundingDinoDetector:
    """Finds boxes for text phrases with a Grounding DINO checkpoint (hub id or local folder)."""

    def __init__(self, model_id: str = DEFAULT_DETECTOR, *, device: str | None = "auto"):
        self.model_id = str(model_id)
        self.device = resolve_device(device)
        self._model: Any = None
        self._processor: Any = None
        self._lock = threading.Lock()

    def load(self) -> GroundingDinoDetector:
        with self._lock:
            if self._model is not None:
                return self
            try:
                from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

                processor = AutoProcessor.from_pretrained(self.model_id)
                model = AutoModelForZeroShotObjectDetection.from_pretrained(self.model_id)
            except Exception as exc:  # OSError (not found / offline), ValueError (not a detector), ...
                raise ModelLoadError(f"could not load detector {self.model_id!r}: {exc}") from exc
            model_type = getattr(model.config, "model_type", "")
            if model_type not in _GROUNDING_TYPES:
                raise ModelLoadError(
                    f"detector {self.model_id!r} is a {model_type!r} model; a Grounding DINO checkpoint is needed "
                    "(its boxes are scored per text token, which is how phrases are attributed)"
                )
            self._model = model.to(self.device).eval()
            self._processor = processor
        return self

    @property
    def max_text_tokens(self) -> int:
        return int(getattr(self.load()._model.config, "max_text_len", 256))

    def _chunks(self, phrases: list[str]) -> list[list[int]]:
        """Phrase indices grouped so each group's prompt fits the model's text length."""
        tok = self._processor.tokenizer
        budget = self.max_text_tokens - 2  # [CLS] and [SEP]
        groups: list[list[int]] = [[]]
        used = 0
        for i, phrase in enumerate(phrases):
            n = len(tok(phrase + ".", add_special_tokens=False)["input_ids"])
            if groups[-1] and used + n > budget:
                groups.append([])
                used = 0
            groups[-1].append(i)
            used += n
        return [g for g in groups if g]

    def detect(self, image: Any, phrases: list[str], *, box_threshold: float = 0.35, text_threshold: float = 0.25,
               max_per_phrase: int = 3, nms_iou: float = 0.5) -> list[Detection]:
        """Boxes for ``phrases`` in a PIL RGB ``image``, in pixels of that image, best first."""
        self.load()
        if not phrases:
            return []
        out: list[Detection] = []
        for group in self._chunks(phrases):
            out.extend(self._detect_group(image, phrases, group, box_threshold, text_threshold, max_per_phrase, nms_iou))
        return sorted(out, key=lambda d: -d.score)

    def _detect_group(self, image: Any, phrases: list[str], group: list[int], box_threshold: float,
                      text_threshold: float, max_per_phrase: int, nms_iou: float) -> list[Detection]:
        import torch

        text, spans, pos = "", [], 0
        for i in group:
            spans.append((pos, pos + len(phrases[i])))
            text += phrases[i] + ". "
            pos = len(text)
        text = text.strip()
        inputs = self._processor(images=image, text=text, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self._model(**inputs)
        offsets = self._processor.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        n_tokens = int(inputs["input_ids"].shape[1])
        token_sets = []
        for start, end in spans:
            idx = [t for t, (s, e) in enumerate(offsets[:n_tokens]) if e > s and s >= start and e <= end]
            token_sets.append(idx)
        probs = outputs.logits[0].float().sigmoid()  # (queries, max_text_len); padding positions are -inf
        box_scores = probs[:, 1 : n_tokens - 1].max(dim=1).values  # the query's best real token
        per_phrase = torch.stack(
            [probs[:, idx].max(dim=1).values if idx else torch.zeros_like(box_scores) for idx in token_sets], dim=1
        )
        phrase_scores, best = per_phrase.max(dim=1)
        w, h = image.size
        cx, cy, bw, bh = outputs.pred_boxes[0].float().unbind(-1)
        boxes = torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], dim=-1)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        keep = (box_scores > box_threshold) & (phrase_scores > text_threshold)
        keep &= (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        found: list[Detection] = []
        for local, i in enumerate(group):
            sel = (keep & (best == local)).nonzero(as_tuple=True)[0]
            if len(sel) == 0:
                continue
            chosen = _nms(boxes[sel].cpu(), phrase_scores[sel].cpu(), nms_iou, max_per_phrase)
            for j in chosen:
                q = int(sel[j])
                box = tuple(round(float(v), 1) for v in boxes[q].tolist())
                found.append(Detection(i, box, round(float(phrase_scores[q]), 4)))  # type: ignore[arg-type]
        return found


class SamSegmenter:
    """Segments the object inside each box with a SAM checkpoint (hub id or local folder)."""

    def __init__(self, model_id: str = DEFAULT_SEGMENTER, *, device: str | None = "auto"):
        self.model_id = str(model_id)
        self.device = resolve_device(device)
        self._model: Any = None
        self._processor: Any = None
        self._lock = threading.Lock()

    def load(self) -> SamSegmenter:
        with self._lock:
            if self._model is not None:
                return self
            try:
                from transformers import SamModel, SamProcessor

                processor = SamProcessor.from_pretrained(self.model_id)
                model = SamModel.from_pretrained(self.model_id)
            except Exception as exc:
                raise ModelLoadError(f"could not load segmenter {self.model_id!r}: {exc}") from exc
            self._model = model.to(self.device).eval()
            self._processor = processor
        return self

    def segment(self, image: Any, boxes: list[tuple[float, float, float, float]]) -> list[tuple[Any, float]]:
        """One ``(mask, score)`` per box: a PIL ``L`` image (0 / 255) of ``image``'s size and SAM's
        predicted IoU for it."""
        import torch
        from PIL import Image

        self.load()
        if not boxes:
            return []
        inputs = self._processor(images=image, input_boxes=[[list(b) for b in boxes]], return_tensors="pt")
        with torch.inference_mode():
            outputs = self._model(pixel_values=inputs["pixel_values"].to(self.device),
                                  input_boxes=inputs["input_boxes"].to(self.device), multimask_output=False)
        masks = self._processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
        )[0]  # (boxes, 1, H, W) bool
        ious = outputs.iou_scores[0, :, 0].float().cpu().tolist()
        result = []
        for k in range(len(boxes)):
            arr = (masks[k, 0].to(torch.uint8) * 255).numpy()
            result.append((Image.fromarray(arr), round(float(ious[k]), 4)))  # uint8 2-D: mode L
        return result


def load_detector(detector: Any = DEFAULT_DETECTOR, device: str | None = "auto") -> Any:
    """A detector object: returned as is if it has ``detect``, else loaded (once) from an id or folder."""
    if hasattr(detector, "detect"):
        return detector
    dev = resolve_device(device)
    return _cached("detector", str(detector), dev, lambda: GroundingDinoDetector(str(detector), device=dev).load())


def load_segmenter(segmenter: Any = DEFAULT_SEGMENTER, device: str | None = "auto") -> Any:
    """A segmenter object (see :func:`load_detector`); None stays None (boxes only)."""
    if segmenter is None or hasattr(segmenter, "segment"):
        return segmenter
    dev = resolve_device(device)
    return _cached("segmenter", str(segmenter), dev, lambda: SamSegmenter(str(segmenter), device=dev).load())
