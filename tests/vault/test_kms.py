"""KMS master keys: the envelope over a remote AEAD, and clear refusals when the client is missing.

The remote here is a real Tink AEAD keyset standing in for the KMS (there is no network):
it speaks the same `aead.Aead` interface the Tink KMS integrations return.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import tink
from tink import aead

from keysentry.vault import KeyringCorrupt, MasterKeyUnavailable, Vault, VaultSealed, WrongMasterKey
from keysentry.vault.kms import RemoteAead

URI = "aws-kms://arn:aws:kms:eu-west-1:111122223333:key/keysentry-test"
ROW = {"tenant": "t", "connection": "c", "field": "api_secret"}


class FakeKms:
    """One remote key per URI; like Tink's Vault integration, it refuses associated data."""

    def __init__(self) -> None:
        aead.register()
        self.keys: dict[str, RemoteAead] = {}
        self.calls: list[str] = []
        self.down = False

    def __call__(self, uri: str) -> RemoteAead:
        if uri not in self.keys:
            self.keys[uri] = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM).primitive(aead.Aead)
        remote = self.keys[uri]
        fake = self

        class Remote:
            def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
                return fake._call("encrypt", remote.encrypt, plaintext, associated_data)

            def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
                return fake._call("decrypt", remote.decrypt, ciphertext, associated_data)

        return Remote()

    def _call(self, name: str, op: object, data: bytes, associated_data: bytes) -> bytes:
        self.calls.append(name)
        if self.down:
            raise ConnectionError("kms.eu-west-1.amazonaws.com unreachable")
        if associated_data:
            raise tink.TinkError("associated data is not supported")
        return op(data, associated_data)  # type: ignore[operator,no-any-return]


def test_kms_sealed_keyring_round_trip(tmp_path: Path) -> None:
    kms = FakeKms()
    vault = Vault.open(tmp_path, kms_uri=URI, kms_factory=kms)
    assert kms.calls == ["encrypt"]
    assert not (tmp_path / "master.key").exists()  # the key stays in the KMS
    sealed = vault.encrypt("secret", **ROW)
    vault.rotate()
    reopened = Vault.open(tmp_path, kms_uri=URI, kms_factory=kms, create=False)
    assert kms.calls[-1] == "decrypt"
    assert reopened.versions == (1, 2)
    assert reopened.decrypt(sealed.ciphertext, key_version=1, **ROW).reveal() == "secret"
    assert URI in reopened.master_source


def test_unreachable_kms_is_sealed_with_the_reason(tmp_path: Path) -> None:
    kms = FakeKms()
    Vault.open(tmp_path, kms_uri=URI, kms_factory=kms)
    before = (tmp_path / "keyring.json").read_bytes()
    kms.down = True
    with pytest.raises(MasterKeyUnavailable, match="ConnectionError") as caught:
        Vault.open(tmp_path, kms_uri=URI, kms_factory=kms)
    assert isinstance(caught.value, VaultSealed)
    assert "could not decrypt" in str(caught.value)
    assert (tmp_path / "keyring.json").read_bytes() == before
    with pytest.raises(MasterKeyUnavailable, match="could not encrypt"):
        Vault.open(tmp_path / "fresh", kms_uri=URI, kms_factory=kms)
    assert not (tmp_path / "fresh" / "keyring.json").exists()


def test_another_kms_key_or_a_local_key_is_a_wrong_master_key(tmp_path: Path) -> None:
    kms = FakeKms()
    Vault.open(tmp_path, kms_uri=URI, kms_factory=kms)
    with pytest.raises(WrongMasterKey, match="kms"):
        Vault.open(tmp_path, kms_uri=URI + "-other", kms_factory=kms)
    with pytest.raises(WrongMasterKey):
        Vault.open(tmp_path, master_key="A" * 43 + "=")


def test_kms_that_lost_the_key_reports_unavailable_not_corrupt(tmp_path: Path) -> None:
    kms = FakeKms()
    Vault.open(tmp_path, kms_uri=URI, kms_factory=kms)
    kms.keys.clear()  # same URI, but the KMS now holds another key (deleted and recreated)
    with pytest.raises(MasterKeyUnavailable, match="could not decrypt"):
        Vault.open(tmp_path, kms_uri=URI, kms_factory=kms)


def test_damaged_keyring_under_a_working_kms_is_corrupt(tmp_path: Path) -> None:
    kms = FakeKms()
    Vault.open(tmp_path, kms_uri=URI, kms_factory=kms)
    path = tmp_path / "keyring.json"
    text = path.read_text()
    start = text.index('"sealed": "') + len('"sealed": "')
    end = text.index('"', start)
    index = start + (end - start) * 3 // 4  # in the local AES-GCM part, past the KMS-wrapped data key
    path.write_text(text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :])
    with pytest.raises(KeyringCorrupt):
        Vault.open(tmp_path, kms_uri=URI, kms_factory=kms)


@pytest.mark.parametrize(
    ("uri", "module", "extra"),
    [
        (URI, "boto3", "awskms"),
        ("gcp-kms://projects/p/locations/global/keyRings/r/cryptoKeys/k", "google.cloud.kms_v1", "gcpkms"),
        ("hcvault://vault.internal:8200/transit/keys/keysentry", "hvac", "hcvault"),
    ],
)
def test_missing_kms_client_library_says_what_to_install(
    tmp_path: Path, uri: str, module: str, extra: str
) -> None:
    try:
        installed = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        installed = False
    if installed:
        pytest.skip(f"{module} is installed here")
    with pytest.raises(MasterKeyUnavailable, match=r"install keysentry\[kms\]") as caught:
        Vault.open(tmp_path / "d", kms_uri=uri)
    assert extra in str(caught.value)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("uri", ["s3://bucket/key", "aws-kms://", "arn:aws:kms:x", "azure-kv://vault/key"])
def test_unknown_kms_uri_lists_the_accepted_forms(tmp_path: Path, uri: str) -> None:
    with pytest.raises(MasterKeyUnavailable, match="aws-kms://, gcp-kms://, hcvault://"):
        Vault.open(tmp_path, kms_uri=uri, kms_factory=FakeKms())


def test_credentials_in_the_uri_are_refused_without_being_echoed(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyUnavailable) as caught:
        Vault.open(
            tmp_path, kms_uri="hcvault://s.TOKEN-CANARY@vault:8200/transit/keys/k", kms_factory=FakeKms()
        )
    assert "TOKEN-CANARY" not in str(caught.value)
    assert "VAULT_TOKEN" in str(caught.value)
