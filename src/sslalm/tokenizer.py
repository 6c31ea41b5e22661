"""Tokenizers for the language model: load a local folder, or build a tiny byte-level BPE.

The Mamba checkpoints use GPT-NeoX's byte-level BPE tokenizer: ``<|endoftext|>`` (id 0) is BOS, EOS and UNK,
``<|padding|>`` (id 1) exists but the shipped configs name no pad token, and no BOS is prepended. No tokenizer
can be downloaded here, so:

* ``load_tokenizer(path)`` reads any local tokenizer folder through ``AutoTokenizer`` and makes the special
  tokens explicit: EOS falls back to ``<|endoftext|>``; a missing pad token becomes ``<|padding|>`` when the
  vocabulary has it (GPT-NeoX), else EOS. A distinct pad keeps "pad" and "end of answer" apart in labels and
  stopping; pads never reach the model's state anyway (right padding, see ``sslalm.models.mamba``).
* ``build_byte_tokenizer(texts)`` trains a small byte-level BPE with the same conventions (ids 0 and 1 as in
  GPT-NeoX) using the ``tokenizers`` library, for tests and the demo.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"


def load_tokenizer(path: str | Path, **kwargs: Any):
    """``AutoTokenizer.from_pretrained(path)`` (local files only) with EOS and pad made explicit.

    ``path`` must be a local folder: a missing folder, one without tokenizer files, or one whose JSON is
    invalid raises a ``UserError`` naming it (transformers would talk about huggingface.co or raise a bare
    parse error).
    """
    from transformers import AutoTokenizer

    from sslalm.errors import UserError
    from sslalm.models.folder import check_json_files

    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"tokenizer folder {folder} does not exist (it must be a local folder)")
    check_json_files(folder, "tokenizer folder")
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except (OSError, ValueError, TypeError) as err:
        files = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise UserError(
            f"cannot load a tokenizer from {folder} (it holds {files}): {str(err).splitlines()[0]}"
        ) from err
    except Exception as err:  # the tokenizers library raises its own Exception for unusable files
        raise UserError(f"cannot load a tokenizer from {folder}: {str(err).splitlines()[0]}") from err
    return ensure_special_tokens(tok)


def ensure_special_tokens(tok):
    """Set a missing EOS to ``<|endoftext|>``, a missing pad to ``<|padding|>`` (else EOS)."""
    vocab = tok.get_vocab()
    if tok.eos_token_id is None:
        if EOS_TOKEN not in vocab:
            raise ValueError(f"tokenizer has no eos token and no {EOS_TOKEN!r} to use as one")
        tok.eos_token = EOS_TOKEN
    if tok.pad_token_id is None:
        tok.pad_token = PAD_TOKEN if PAD_TOKEN in vocab else tok.eos_token
        logger.info("tokenizer had no pad token; using %r (id %d)", tok.pad_token, tok.pad_token_id)
    tok.padding_side = "right"
    return tok


def build_byte_tokenizer(texts: Iterable[str], vocab_size: int = 512, path: str | Path | None = None):
    """Train a byte-level BPE on ``texts`` with GPT-NeoX's special tokens; save it to ``path`` if given.

    Any string can be encoded (all 256 bytes are in the base alphabet). Returns a ``PreTrainedTokenizerFast``
    whose ids 0 and 1 are ``<|endoftext|>`` and ``<|padding|>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 2:
        raise ValueError(f"vocab_size must be at least {len(alphabet) + 2} (bytes + 2 special tokens)")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="right",
    )
    if path is not None:
        tok.save_pretrained(str(path))
    return tok
