"""Google Cloud Secret Manager, through google-cloud-secret-manager's asyncio gRPC client.

The vocabulary (what the REST and gRPC front ends produce and render):

- ``SecretRequest.operation`` is a SecretManagerService RPC name: AccessSecretVersion,
  GetSecret, ListSecrets, CreateSecret, AddSecretVersion, UpdateSecret, DeleteSecret,
  GetSecretVersion, ListSecretVersions, Disable/Enable/DestroySecretVersion, and
  Get/SetIamPolicy, TestIamPermissions.
- ``params`` is ``{"request": <the request message>}``: proto-plus
  (``secretmanager_v1.types``), or ``google.iam.v1`` protobuf for the IAM calls, naming
  resources in the *caller's* project (``projects/{p}/[locations/{l}/]secrets/{s}``).
- ``SecretResult.data`` is ``{"response": <the response message>}`` (``Empty`` for
  DeleteSecret), one page for the listings, with every secret and version name back in the
  caller's project. ``items`` name what the answer is about as policy does,
  ``SecretRef(backend, "{project}/{secret}")`` (``gcp:{project}/{secret}``; the location is
  not part of it): every secret of a ListSecrets page; the one secret of anything else,
  ListSecretVersions included (once: policy is per secret), with ``version_id`` (the
  number, also when "latest" was asked) when one version is the subject, and the payload
  as ``value`` for AccessSecretVersion only.

Projects callers name are mapped to real ones by ``GcpSettings.projects`` (a project not in
the map is refused as InvalidBackendRequest), or passed through. Google's errors become
:mod:`keyledger.backends.errors` kinds with the gRPC status name as ``code``, and store
messages name the caller's project, not the real one.

Credentials come from Google's chain (``GOOGLE_APPLICATION_CREDENTIALS``, the metadata
server), resolved in a worker thread; ``anonymous`` (a stand-in) and plaintext are for
loopback endpoints only. Calls carry the settings' timeout and no SDK retry.
"""

from keyledger.backends.gcp._backend import GcpBackend
from keyledger.backends.gcp._names import ResourceName, parse
from keyledger.backends.gcp._operations import OPERATIONS, Operation
from keyledger.backends.gcp._settings import GcpSettings

# The vocabulary is public: Google's front ends speak it too.
__all__ = ["OPERATIONS", "GcpBackend", "GcpSettings", "Operation", "ResourceName", "parse"]
