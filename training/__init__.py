"""The training layer: PEFT fine-tuning, FL algorithms, the update codec, robust aggregation, simulation.

``training`` knows nothing about chains or sockets: plain tensors and files in, plain tensors and files out.
"""
