"""Bundled data sources and tokenisation.

- :mod:`training.datasets.synthetic`: seeded synthetic skills (arithmetic, word reversal, capitals,
  antonyms), one answer each, so exact-match accuracy is meaningful; SFT examples and preference pairs.
- :mod:`training.datasets.chatterbot`: the English categories of ``chatterbot-corpus``, one client each.
- :mod:`training.datasets.tokenize`: prompt-masked tokenisation and padding into batches.
- :mod:`training.datasets.hf`: users' local Hugging Face datasets (``save_to_disk``, parquet, json,
  jsonl) with column mapping, for SFT examples and preference pairs; never a hub download.
- :mod:`training.datasets.templates`: the OpenFedLLM reference's alpaca and vicuna prompt templates.
"""
