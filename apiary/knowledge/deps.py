"""What the knowledge code needs from its process, as Protocols: the composition root
(`apiary.runtime`) satisfies them, and each function names only the parts it uses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from apiary.config import Settings
    from apiary.crypto.keyring import Sealer
    from apiary.embeddings.minilm import MiniLMEmbedder
    from apiary.gateway.client import GatewayClient
    from apiary.kit.notify import Notifier
    from apiary.knowledge.vectors import VectorStore


class EmbedDeps(Protocol):
    client: GatewayClient  # a gateway model's calls, routed and billed like /v1/embeddings

    @property
    def embedder(self) -> MiniLMEmbedder: ...  # the bundled model, loaded on first use


class SearchDeps(EmbedDeps, Protocol):
    session_factory: async_sessionmaker[AsyncSession]
    vectors: VectorStore

    @property
    def encryption(self) -> Sealer: ...  # documents and chunks' text, encrypted at rest


class IngestDeps(SearchDeps, Protocol):
    settings: Settings  # the extraction limits, embedding batches and waits
    notifier: Notifier  # a document's progress, to whoever follows it
