"""The conformance kit: the suite every chain adapter passes, for third-party adapters too.

For test suites only: this package imports pytest and pytest-asyncio (the extra
``x402-verifier[testing]`` installs them), and nothing in ``verifier`` imports it, so the
product never needs them. An adapter's test module subclasses ``AdapterConformance`` and provides
a ``harness`` fixture (a ``Harness``: a local chain of the family that can be paid on, and fed
wrong things) and a ``redis_url`` fixture; see ``verifier.testing.conformance`` and the README's
Adapters section. ``PaymentRail``, the paying half of a harness, is what the repository's demo
pays through; ``running_worker`` and ``connected_gate`` run the real stack in a test's event loop.
"""

from verifier.testing.conformance import AdapterConformance, Rig
from verifier.testing.harness import (
    ED25519_ORDER,
    Harness,
    Payment,
    PaymentRail,
    ed25519_high_s,
)
from verifier.testing.stack import FAST_WORKER, connected_gate, running_worker, suite_settings

__all__ = [
    "ED25519_ORDER",
    "FAST_WORKER",
    "AdapterConformance",
    "Harness",
    "Payment",
    "PaymentRail",
    "Rig",
    "connected_gate",
    "ed25519_high_s",
    "running_worker",
    "suite_settings",
]
