"""TON family adapter: TON coin and jettons over toncenter API v3 (see ``chains.ton.adapter``)."""

from chains.ton.adapter import UNVERIFIED_JETTON, TONAdapter

__all__ = ["UNVERIFIED_JETTON", "TONAdapter"]
