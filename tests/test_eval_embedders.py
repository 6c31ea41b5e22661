"""Text embedders: the hashing backend, the label cache, the OpenAI backend (never the network), MiniLM."""

import types

import numpy as np
import pytest

from sslalm.eval.classification import score_classification
from sslalm.eval.embedders import (
    HashingEmbedder,
    LabelEmbeddingCache,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    make_embedder,
)


def test_hashing_embedder_is_deterministic_and_lexical():
    e = HashingEmbedder()
    a = e.encode(["A dog barks!", "a DOG barks", "rain"])
    b = HashingEmbedder().encode(["a dog barks"])
    assert a.shape == (3, 4096) and a.dtype == np.float32
    np.testing.assert_array_equal(a[0], a[1])
    np.testing.assert_array_equal(a[0], b[0])
    assert float(a[0] @ a[2]) == 0.0
    assert e.name == "hashing-4096" and e.encode([]).shape == (0, 4096)
    # it serves as the scorer's embedder: an answer that is a label's name scores that label
    labels = ["dog barks", "rain"]
    s = score_classification(["a dog barks", "rain"], [["dog barks"], ["rain"]], labels, "acc", e)
    assert s.value == pytest.approx(100.0)


def test_label_cache_memory_and_disk(tmp_path):
    calls = []

    class Counting(HashingEmbedder):
        def encode(self, texts):
            calls.append(len(texts))
            return super().encode(texts)

    labels = ["sound of dog", "sound of rain"]
    c1 = LabelEmbeddingCache(Counting(), tmp_path)
    x = c1.encode_labels(labels)
    y = c1.encode_labels(labels)
    assert calls == [2] and c1.hits == 1 and c1.misses == 1
    np.testing.assert_array_equal(x, y)
    files = list(tmp_path.rglob("*.npy"))
    assert len(files) == 1 and files[0].parent.name == "hashing-4096"
    c2 = LabelEmbeddingCache(Counting(), tmp_path)  # a new process: read from disk
    np.testing.assert_array_equal(c2.encode_labels(labels), x)
    assert calls == [2] and c2.hits == 1
    c2.encode_labels(["sound of dog", "sound of rain."])  # any change in the text is a new key
    assert calls == [2, 2]
    assert LabelEmbeddingCache(HashingEmbedder(64)).key(labels) != c1.key(
        labels
    )  # and so is another embedder


def test_label_cache_ignores_a_corrupt_file(tmp_path):
    c = LabelEmbeddingCache(HashingEmbedder(), tmp_path)
    c.encode_labels(["a"])
    path = next(tmp_path.rglob("*.npy"))
    path.write_bytes(b"garbage")
    again = LabelEmbeddingCache(HashingEmbedder(), tmp_path).encode_labels(["a"])
    assert again.shape == (1, 4096)


def test_openai_needs_a_key_and_never_calls_the_network_on_construction(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIEmbedder()
    with pytest.raises(ValueError, match="API key"):
        make_embedder("openai")
    e = OpenAIEmbedder(api_key="sk-test")  # constructs offline; the client is made on first encode
    assert e.name == "openai-text-embedding-ada-002" and e._client is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert OpenAIEmbedder()._api_key == "sk-env"


class _FakeEmbeddings:
    """Stands in for ``client.embeddings``: returns data out of order, fails once to exercise the retry."""

    def __init__(self):
        self.requests = []
        self.failed = False

    def create(self, model, input):
        if not self.failed:
            self.failed = True
            raise RuntimeError("rate limited")
        self.requests.append((model, list(input)))
        data = [
            types.SimpleNamespace(index=i, embedding=[float(len(t)), float(i)]) for i, t in enumerate(input)
        ]
        return types.SimpleNamespace(data=data[::-1])


def test_openai_encode_batches_orders_and_retries(monkeypatch):
    monkeypatch.setattr("sslalm.eval.embedders.time.sleep", lambda s: None)
    fake = types.SimpleNamespace(embeddings=_FakeEmbeddings())
    e = OpenAIEmbedder(client=fake, batch_size=2)
    out = e.encode(["a", "bbb", "", "cc", "d"])
    assert out.shape == (5, 2)
    assert out[:, 0].tolist() == [1.0, 3.0, 1.0, 2.0, 1.0]  # "" was sent as " "
    assert [len(r[1]) for r in fake.embeddings.requests] == [2, 2, 1]
    assert fake.embeddings.requests[0][0] == "text-embedding-ada-002"


def test_openai_missing_package_gives_an_install_hint(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_openai(name, *a, **k):
        if name == "openai":
            raise ImportError("No module named 'openai'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_openai)
    with pytest.raises(ImportError, match="pip install 'openai"):
        OpenAIEmbedder(api_key="sk-test").encode(["x"])


def test_make_embedder_names(tmp_path):
    assert make_embedder("hashing").name == "hashing-4096"
    minilm = make_embedder("minilm")
    assert minilm.name == "all-MiniLM-L6-v2" and minilm._model is None  # lazy: nothing loaded yet
    assert make_embedder(str(tmp_path)).name == tmp_path.name
    with pytest.raises(ValueError, match="unknown embedder"):
        make_embedder("word2vec")


@pytest.mark.slow
def test_minilm_offline_scores_exact_labels_100_and_matches_meaning():
    e = SentenceTransformerEmbedder()
    labels = ["dog", "rain", "siren", "church bells"]
    s = score_classification(labels, [[x] for x in labels], labels, "acc", e)
    assert s.value == pytest.approx(100.0)
    answers = ["a dog is barking loudly", "water falling from the sky", "an emergency vehicle with its alarm"]
    s = score_classification(answers, [["dog"], ["rain"], ["siren"]], labels, "acc", e)
    assert s.value == pytest.approx(100.0)
    assert e.encode(["x"]).shape == (1, 384)
