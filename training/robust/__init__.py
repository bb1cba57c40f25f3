"""Bit-exact building blocks of the robust aggregators in :mod:`training.aggregate`.

- :mod:`training.robust.exact`: input checks, exact fixed-point weighted sums, fixed-order Gram matrices.
- :mod:`training.robust.sorting`: coordinate-wise order statistics by sorting networks (median, trimmed
  mean).
- :mod:`training.robust.kernels`, :mod:`training.robust.sum_kernel`, :mod:`training.robust.gram_kernel`: the
  fused numba kernels behind them (their float64 sums are exact: every value they add is an integer below
  ``2**53``), and :mod:`training.robust.tile_ir`, the Gram tile as LLVM IR (float32 fused multiply-adds
  in a fixed lane order).
- :mod:`training.robust.reference`: the same arithmetic as whole-block torch operations (matched byte for
  byte).
- :mod:`training.robust.span`: Weiszfeld and centered clipping run on the Gram matrix, in coefficient space.
"""
