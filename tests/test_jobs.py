"""The pipeline's failure paths: the deadline comes from the authenticated challenge only.

The chain flows (``test_*_flow.py``) run the pipeline end to end; here an adapter that fails
with a bug (an error it did not map) shows what a job does when a step raises.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import pytest
from arq import Retry
from redis.asyncio import Redis

from tests.jobs_fixtures import a_job, signer_of
from tests.support import SettingsFactory
from verifier.adapter import ChainAdapter, Query
from verifier.jobs import Verifier
from verifier.models import Failure, Observation, ReasonCode
from verifier.settings import NetworkSettings, Settings
from verifier.store import Store

NETWORK = "eip155:31337"


class BuggyAdapter:
    """An adapter whose ``observe`` fails with an error it does not map (a bug)."""

    namespace: ClassVar[str] = "eip155"
    network = NETWORK

    @classmethod
    def create(cls, network: str, config: NetworkSettings) -> ChainAdapter:
        return cls()

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def canonical_txid(self, tx_ref: str) -> str:
        return tx_ref.lower()

    def normalize_address(self, address: str) -> str:
        return address.lower()

    def normalize_asset(self, asset: str) -> str:
        return asset.lower()

    async def observe(self, query: Query) -> Observation:
        raise RuntimeError("a bug in the adapter")

    async def verify_signature(self, account: str, message: bytes, signature: str) -> bool:
        return False


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(worker={"grace_seconds": 30})


@pytest.fixture
def verifier(settings: Settings, redis: Redis) -> Verifier:
    adapters: dict[str, ChainAdapter] = {NETWORK: BuggyAdapter()}
    return Verifier(settings, signer_of(settings), adapters, Store(redis, settings.store))


def test_the_deadline_is_the_authenticated_expiry_plus_grace(verifier: Verifier) -> None:
    challenge = verifier.authenticate(a_job(verifier.signer, NETWORK), now=1_000)
    assert not isinstance(challenge, Failure)
    assert verifier.deadline(challenge) == challenge.expires_at + 30


async def test_a_forged_nonce_is_refused_at_once_whatever_expiry_it_claims(
    verifier: Verifier,
) -> None:
    # Well-formed, with an expiry far ahead, but not issued with our key: nothing to wait for.
    forged = "n1.k1.1000.99999999999.AAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBB"
    job = a_job(verifier.signer, NETWORK, nonce=forged)
    refusal = verifier.authenticate(job, now=1_000)
    assert isinstance(refusal, Failure) and refusal.error_reason is ReasonCode.NONCE_UNKNOWN
    assert verifier.deadline(None) == 0.0
    outcome = await verifier.run(job, job_try=1)
    assert isinstance(outcome, Failure) and outcome.error_reason is ReasonCode.NONCE_UNKNOWN
    assert await verifier.store.outcome(job.job) == outcome


async def test_an_adapter_bug_is_retried_until_the_challenges_deadline(
    verifier: Verifier, caplog: pytest.LogCaptureFixture
) -> None:
    job = a_job(verifier.signer, NETWORK)
    with caplog.at_level(logging.ERROR, "verifier.jobs"), pytest.raises(Retry) as retry:
        await verifier.run(job, job_try=1)
    assert retry.value.defer_score is not None and retry.value.defer_score > 0
    assert "failed unexpectedly" in caplog.text and "a bug in the adapter" in caplog.text
    assert await verifier.store.outcome(job.job) is None  # nothing final yet


async def test_the_dry_run_carries_the_challenge_to_the_adapter(verifier: Verifier) -> None:
    with pytest.raises(RuntimeError, match="a bug in the adapter"):
        await verifier.attempt(a_job(verifier.signer, NETWORK))
