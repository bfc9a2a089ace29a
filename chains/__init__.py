"""Built-in chain adapters, one module per family, registered in ``verifier.chains``.

Each adapter imports only ``verifier``'s public adapter protocol and its own chain SDK, which is
installed with the family's extra (``pip install x402-verifier[evm]``).
"""
