"""The model: config and LLaMA decoder, tokenizer, generation and the native checkpoint."""
