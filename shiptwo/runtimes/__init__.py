"""Independent runtimes shiptwo checks itself against: llama.cpp and transformers."""
