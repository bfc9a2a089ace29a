"""EVM family adapter (``eip155:<chain id>``); see ``chains.evm.adapter``."""

from chains.evm.adapter import EVMAdapter
from chains.evm.parse import calldata_memos, recover_personal, transfers_from_logs

__all__ = ["EVMAdapter", "calldata_memos", "recover_personal", "transfers_from_logs"]
