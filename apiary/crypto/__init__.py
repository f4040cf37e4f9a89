"""Encryption at rest: AES-256-GCM envelope encryption of tenant data.

Each tenant has data keys (`tenant_data_keys`, numbered versions) that encrypt its stored
documents and conversation memory; each data key is kept only wrapped by a key-encryption
key (KEK) from the environment or Azure Key Vault (`keks.py`). `Keyring` (`keyring.py`) is
the one object the domains see, through the `Sealer` protocol. This package imports no
domain: the composition root builds the keyring and hands it over.
"""
