"""Remote key-encryption keys through Tink's KMS integrations (AWS KMS, Google Cloud KMS, HashiCorp Vault).

Only the client for the configured URI is imported, and only when one is configured:
the integrations pull boto3, google-cloud-kms or hvac, which keysentry does not install
by default. Without them the operator gets one sentence saying what to install.

URIs (Tink's own forms):
    aws-kms://arn:aws:kms:<region>:<account>:key/<id>     credentials: boto3's usual chain
    gcp-kms://projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>   credentials: Application Default
    hcvault://<host>[:<port>]/<mount>/keys/<name>          Vault transit; token from VAULT_TOKEN,
                                                            https unless VAULT_ADDR says otherwise
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from keysentry.vault.errors import MasterKeyUnavailable


class RemoteAead(Protocol):
    """What a KMS key offers (Tink's `aead.Aead`): the key itself never leaves the KMS."""

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes: ...

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes: ...


RemoteAeadFactory = Callable[[str], RemoteAead]

# scheme -> (Tink integration module, Tink extra that installs its client library)
SCHEMES: dict[str, tuple[str, str]] = {
    "aws-kms": ("tink.integration.awskms", "awskms"),
    "gcp-kms": ("tink.integration.gcpkms", "gcpkms"),
    "hcvault": ("tink.integration.hcvault", "hcvault"),
}
INSTALL_HINT = "install keysentry[kms]"


def check_uri(uri: str) -> str:
    """The scheme of a KMS URI we can use; MasterKeyUnavailable with the accepted forms otherwise."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in SCHEMES or not rest:
        accepted = ", ".join(f"{s}://" for s in SCHEMES)
        raise MasterKeyUnavailable(
            f"KEYSENTRY_KMS_URI must start with one of {accepted} followed by the key's path "
            "(see docs/security.md, 'Master key sources')"
        )
    if "@" in rest.split("/", 1)[0]:
        # refuse rather than echo: the part before @ would be a credential
        raise MasterKeyUnavailable(
            "KEYSENTRY_KMS_URI must not carry credentials; give them the KMS client's usual way "
            "(AWS_* / GOOGLE_APPLICATION_CREDENTIALS / VAULT_TOKEN)"
        )
    return scheme


def _load_integration(scheme: str) -> Any:
    module, extra = SCHEMES[scheme]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MasterKeyUnavailable(
            f"KMS master keys ({scheme}://) are not available here: {INSTALL_HINT} "
            f"(it adds Tink's {extra} client libraries), or use KEYSENTRY_MASTER_KEY / a key file"
        ) from None


def default_remote_aead(uri: str) -> RemoteAead:
    """The Tink AEAD for `uri`, through the matching integration."""
    scheme = check_uri(uri)
    integration = _load_integration(scheme)
    try:
        if scheme == "aws-kms":
            return integration.AwsKmsClient(uri, None).get_aead(uri)  # type: ignore[no-any-return]
        if scheme == "gcp-kms":
            return integration.GcpKmsClient(uri, None).get_aead(uri)  # type: ignore[no-any-return]
        return _hcvault_aead(integration, uri)
    except MasterKeyUnavailable:
        raise
    except Exception as e:  # the clients raise TinkError, botocore and google-auth errors alike
        raise MasterKeyUnavailable(
            f"the KMS client for {scheme}:// could not be set up ({type(e).__name__}): "
            "check the key URI and the client's credentials"
        ) from e


def _hcvault_aead(integration: Any, uri: str) -> RemoteAead:
    hvac = importlib.import_module("hvac")
    parts = urlsplit(uri)
    address = os.environ.get("VAULT_ADDR") or f"https://{parts.netloc}"
    # hvac reads VAULT_TOKEN itself when no token is passed
    client = hvac.Client(url=address)
    return integration.new_aead(parts.path.lstrip("/"), client)  # type: ignore[no-any-return]
