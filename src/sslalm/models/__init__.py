"""Model definitions and their composition.

Building blocks: ``dass`` (the DASS encoder), ``mamba`` / ``mamba_config`` (our Mamba LM), ``projector``.

The audio language model is put together from parts chosen by name in ``SSLALMConfig`` (``lalm_config``):

* ``encoders``: the ``AudioEncoder`` interface (``forward_features``, ``feature_map_size``, ``hidden_size``,
  ``load_checkpoint`` / ``save_checkpoint``, ``set_gradient_checkpointing``) and its registry ``ENCODERS``
  (``"dass"``, ``"ast"``), keyed by ``encoder_type``;
* ``backends``: the ``LanguageModelBackend`` interface (``build``, ``save_base``, ``lora_target_modules``,
  ``set_gradient_checkpointing``, ``prefill`` / ``step``, ``generate``) and its registry ``LM_BACKENDS``
  (``"mamba"``, ``"hf"``), keyed by ``lm_type``;
* ``processor``: ``SSLALMProcessor``, audio -> fbank, question/answer -> token ids, collation;
* ``lalm``: ``SSLALM``, which composes encoder -> projector -> LM (+ LoRA), and saves and loads the result.

A new encoder or LM is one module with a subclass of the interface plus one registry entry (or a
``register_encoder`` / ``register_lm_backend`` call); nothing else branches on ``encoder_type``/``lm_type``.
"""
