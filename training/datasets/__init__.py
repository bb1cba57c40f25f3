"""Bundled data sources and tokenisation.

- :mod:`training.datasets.synthetic`: seeded synthetic skills (arithmetic, word reversal, capitals,
  antonyms), one answer each, so exact-match accuracy is meaningful; SFT examples and preference pairs.
- :mod:`training.datasets.chatterbot`: the English categories of ``chatterbot-corpus``, one client each.
- :mod:`training.datasets.tokenize`: prompt-masked tokenisation and padding into batches.
"""
