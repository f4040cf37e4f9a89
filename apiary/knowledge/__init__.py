"""Knowledge bases: documents a tenant uploads, split, embedded and searched with citations.

`service.search` is the one entry point for retrieval: the REST search route and the
swarm's `knowledge_search` tool both call it. Vectors live in Qdrant behind
`vectors.VectorStore`, which adds the tenant filter itself (the vector-side choke point).
"""
