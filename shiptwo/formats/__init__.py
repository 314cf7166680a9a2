"""Release formats: tensor-name tables, Hugging Face directory, GGUF, published releases."""
