"""Stellar family: the adapter over Horizon (``adapter``) and Horizon's shapes (``horizon``)."""

from chains.stellar.adapter import StellarAdapter

__all__ = ["StellarAdapter"]
