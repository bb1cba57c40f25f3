"""fedchain's Solidity contracts and their compiled artifacts (ABI, bytecode, metadata, standard JSON).

The artifacts in ``contracts/artifacts`` are produced by ``python -m contracts.build`` with the pinned
solcjs compiler and are shipped inside the wheel so that the ledger can deploy and call the contracts
without a compiler.
"""
