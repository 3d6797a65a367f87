"""gptui: train a small GPT on any text in the terminal, watch it learn, then talk to it."""

__version__ = "0.1.0"
