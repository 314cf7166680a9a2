"""Training data: the corpus, the chat format and instruction pairs."""
