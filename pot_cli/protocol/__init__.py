"""PoT's own rules, sans-IO: the genesis that founds a chain (validators, economics, initial
accounts), the block that records one round (submissions with their verdicts, the model update,
rewards and penalties) and the integer, conserved ledger that pays and slashes — plain functions
and frozen dataclasses with no clocks, threads, sockets or randomness, so that every validator
re-derives exactly the same result from the same inputs and anyone can replay a chain from its
genesis.
"""
