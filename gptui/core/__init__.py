"""The engine: configuration, tokenizers, data, model, training, generation and runs.

Nothing in this package imports Textual or the UI; torch is imported by the modules that need it
(`model`, `trainer`, `generate`), never at package import, so the TUI can start without it.
"""
