"""Model definitions: the DASS encoder, the Mamba LM and their composition."""
