"""Azure Key Vault secrets, through azure-keyvault-secrets' aio SecretClient.

The vocabulary (what the Azure front end produces and renders):

- ``SecretRequest.operation`` is a Key Vault operationId: GetSecret, SetSecret,
  UpdateSecret, DeleteSecret, GetSecrets, GetSecretVersions, GetDeletedSecrets,
  GetDeletedSecret, RecoverDeletedSecret, PurgeDeletedSecret, BackupSecret, RestoreSecret
  (:mod:`keyledger.backends.azure.routes`).
- ``params``: ``vault`` (the vault's name in the backend's settings), ``name`` and
  ``version`` (""/None: the latest) as the path gave them, ``query`` (pairs; only
  api-version, maxresults and $skiptoken are forwarded), ``body`` (the JSON object sent,
  for operations that take one), and the caller's view of the vault: ``id_base_url``
  (``scheme://host[:port]``, what ids are written on) and ``base_url`` (the same with the
  vault's path prefix, what ``nextLink`` is written on).
- ``SecretResult.data`` is ``{"status": HTTP status, "body": Key Vault's JSON answer}``
  with every vault URL in it (``id``, ``kid``, ``recoveryId``, ``nextLink``) moved onto the
  caller's. ``items`` name secrets as policy does, ``SecretRef(backend, "{vault}/{name}")``
  with the name in lower case (Key Vault's names are case-insensitive): each secret of a
  listing; the one secret of anything else, with the version the answer names and, for
  GetSecret and SetSecret, the value (to fingerprint). RestoreSecret names none: a backup
  is opaque, so a restore is authorised on the whole vault.

Key Vault's errors become :mod:`keyledger.backends.errors` kinds with its error code as
``code`` and its HTTP status as ``status``. Credentials are keyledger's own (azure-identity;
see :class:`AzureSettings`); a missing one fails start-up, naming what was tried.
"""

from keyledger.backends.azure._backend import AzureBackend
from keyledger.backends.azure._settings import CREDENTIALS, AzureSettings
from keyledger.backends.azure.routes import OPERATIONS, Operation, Route, route_for

__all__ = [
    "CREDENTIALS",
    "OPERATIONS",
    "AzureBackend",
    "AzureSettings",
    "Operation",
    "Route",
    "route_for",
]
