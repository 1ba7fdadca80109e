"""IO around the protocol: storage now; the validator service, HTTP API, peer transport and
miner loop come with the network issue. Nothing in consensus/ or protocol/ imports this."""
