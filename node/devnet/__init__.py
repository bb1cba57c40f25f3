"""The devnet harness: anvil, an IPFS daemon and fedchain nodes on loopback."""
