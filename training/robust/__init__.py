"""Bit-exact building blocks of the robust aggregators in :mod:`training.aggregate`.

- :mod:`training.robust.exact`: input checks, exact fixed-point weighted sums and Gram matrices.
- :mod:`training.robust.sorting`: coordinate-wise order statistics by sorting networks (median, trimmed
  mean).
- :mod:`training.robust.span`: Weiszfeld and centered clipping run on the Gram matrix, in coefficient space.
"""
