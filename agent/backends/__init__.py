"""Agent backends: the built-in litellm loop and external command agents."""
