"""Solana family adapter (``solana:<genesis hash prefix>``); see ``chains.solana.adapter``."""

from chains.solana.adapter import SolanaAdapter
from chains.solana.parse import associated_token_account, observe_transaction

__all__ = ["SolanaAdapter", "associated_token_account", "observe_transaction"]
