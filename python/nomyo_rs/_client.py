"""The classes of `nomyo_rs` (see the package's docstring)."""

import os
import warnings
from typing import Any, Dict, List, Optional, Sequence

from ._native import ClientKeys, NativeClient

_TIERS = ("standard", "high", "maximum")
_PROTOCOLS = ("auto", "v2", "v1")


def _check_tier(security_tier: Optional[str]) -> None:
    if security_tier is not None and security_tier not in _TIERS:
        raise ValueError(f"Invalid security_tier: '{security_tier}'. Must be one of: {', '.join(_TIERS)}")


class SecureCompletionClient:
    """The lower-level client of `nomyo`: key generation and loading, and one
    sealed request at a time.

    Keys are generated, loaded and kept in Rust memory; `public_key_pem` is
    the only key material Python sees. Files written by `generate_keys` are
    the ones `nomyo` writes (DIR/private_key.pem, PKCS#8, encrypted with the
    password when given, mode 0600; DIR/public_key.pem), and each package
    loads the other's. Unlike `nomyo`, existing key files are never
    overwritten (FileExistsError), and a private key file others can read is
    refused.

    Beyond `nomyo` (keyword-only): `protocol` ("auto", the default: v2 when
    the server offers it; "v2"; "v1"), `pins` (accepted server key
    fingerprints, `sha256:<hex>`), `known_servers` (the file recording each
    server's key on first use; default ~/.config/nomyo/known_servers),
    `require_attestation` (refuse a server whose attestation, a TPM's or a
    confidential VM's (AMD SEV-SNP, Intel TDX), does not pass, and check each
    answer's quote or report; `ek_roots`: a PEM file of EK root certificates;
    `attestation_policy`: a TOML policy file of allowed PCR values,
    measurements and TCB; `tdx_collateral`: a TDX server's collateral, JSON)
    and `timeout` (seconds per attempt, default 900).
    """

    def __init__(
        self,
        router_url: str = "https://api.nomyo.ai",
        allow_http: bool = False,
        secure_memory: bool = True,
        max_retries: int = 2,
        *,
        protocol: str = "auto",
        pins: Optional[Sequence[str]] = None,
        known_servers: Optional[str] = None,
        require_attestation: bool = False,
        ek_roots: Optional[str] = None,
        attestation_policy: Optional[str] = None,
        tdx_collateral: Optional[str] = None,
        timeout: Optional[float] = None,
    ):
        if protocol not in _PROTOCOLS:
            raise ValueError(f"Invalid protocol: '{protocol}'. Must be one of: {', '.join(_PROTOCOLS)}")
        self.router_url = router_url.rstrip("/")
        self.allow_http = allow_http
        self.max_retries = max_retries
        self.key_size = 4096
        self.protocol = protocol
        self.pins = list(pins) if pins else []
        self.known_servers = os.fspath(known_servers) if known_servers is not None else None
        self.require_attestation = require_attestation
        self.ek_roots = os.fspath(ek_roots) if ek_roots is not None else None
        self.attestation_policy = os.fspath(attestation_policy) if attestation_policy is not None else None
        self.tdx_collateral = os.fspath(tdx_collateral) if tdx_collateral is not None else None
        self.timeout = timeout
        # Plaintext always lives in locked, wiped memory in Rust; the flag is
        # accepted for compatibility.
        self._use_secure_memory = secure_memory
        self._keys: Optional[ClientKeys] = None
        self._natives: Dict[Any, NativeClient] = {}
        if not self.router_url.startswith("https://") and allow_http:
            warnings.warn(
                "Using HTTP instead of HTTPS: the API key and the server key travel unprotected "
                "(local development only).",
                UserWarning,
                stacklevel=2,
            )

    @property
    def public_key_pem(self) -> Optional[str]:
        """The client's public key (PEM), once generated or loaded."""
        return self._keys.public_key_pem if self._keys is not None else None

    def generate_keys(self, save_to_file: bool = False, key_dir: str = "client_keys", password: Optional[str] = None) -> None:
        """Generates an RSA-4096 key pair; with `save_to_file`, saves it in
        `key_dir` (encrypted with `password` when given)."""
        self._keys = ClientKeys.generate(os.fspath(key_dir) if save_to_file else None, password)
        self._natives.clear()

    def load_keys(self, private_key_path: str, public_key_path: Optional[str] = None, password: Optional[str] = None) -> None:
        """Loads a PEM private key (with `password` when it is encrypted) and,
        when given, checks the public key file against it."""
        self._keys = ClientKeys.load(
            os.fspath(private_key_path),
            os.fspath(public_key_path) if public_key_path is not None else None,
            password,
        )
        self._natives.clear()

    def _native(self, api_key: Optional[str] = None, key_dir: Optional[str] = None) -> NativeClient:
        """The Rust client for this API key (one per key, reused: its
        connections, server key and client key are cached)."""
        cache_key = (api_key, key_dir)
        native = self._natives.get(cache_key)
        if native is None:
            native = NativeClient(
                self.router_url,
                allow_http=self.allow_http,
                api_key=api_key,
                max_retries=self.max_retries,
                protocol=self.protocol,
                key_dir=os.fspath(key_dir) if key_dir is not None and self._keys is None else None,
                client_key=self._keys,
                pins=self.pins,
                known_servers=self.known_servers,
                require_attestation=self.require_attestation,
                ek_roots=self.ek_roots,
                attestation_policy=self.attestation_policy,
                tdx_collateral=self.tdx_collateral,
                timeout=self.timeout,
            )
            self._natives[cache_key] = native
        return native

    async def fetch_server_public_key(self) -> str:
        """The server's public key (PEM), verified against the pins or the
        known-servers file."""
        return await self._native().server_public_key()

    async def send_secure_request(
        self,
        payload: Dict[str, Any],
        payload_id: Optional[str] = None,
        api_key: Optional[str] = None,
        security_tier: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Seals `payload` (model, messages and any OpenAI parameter), sends
        it and returns the opened answer. The client chooses the payload id
        itself (`_metadata["payload_id"]`); `payload_id` is accepted for
        compatibility."""
        _check_tier(security_tier)
        return await self._native(api_key).create(dict(payload), security_tier, False)


class SecureChatCompletion:
    """OpenAI-style chat completions, sealed end to end: `nomyo`'s
    `SecureChatCompletion` with the same arguments, plus the keyword-only
    options of `SecureCompletionClient` (`protocol`, `pins`,
    `known_servers`, `require_attestation`, `ek_roots`,
    `attestation_policy`, `tdx_collateral`, `timeout`) and
    `key_password` (the password of the keys in `key_dir`)."""

    def __init__(
        self,
        base_url: str = "https://api.nomyo.ai",
        allow_http: bool = False,
        api_key: Optional[str] = None,
        secure_memory: bool = True,
        key_dir: Optional[str] = None,
        max_retries: int = 2,
        *,
        protocol: str = "auto",
        pins: Optional[Sequence[str]] = None,
        known_servers: Optional[str] = None,
        require_attestation: bool = False,
        ek_roots: Optional[str] = None,
        attestation_policy: Optional[str] = None,
        tdx_collateral: Optional[str] = None,
        timeout: Optional[float] = None,
        key_password: Optional[str] = None,
    ):
        self._options = dict(
            protocol=protocol,
            pins=pins,
            known_servers=known_servers,
            require_attestation=require_attestation,
            ek_roots=ek_roots,
            attestation_policy=attestation_policy,
            tdx_collateral=tdx_collateral,
            timeout=timeout,
        )
        self.client = SecureCompletionClient(
            router_url=base_url,
            allow_http=allow_http,
            secure_memory=secure_memory,
            max_retries=max_retries,
            **self._options,
        )
        self.api_key = api_key
        self._key_dir = os.fspath(key_dir) if key_dir is not None else None
        self._key_password = key_password
        self._secure_memory_enabled = secure_memory
        self._overrides: Dict[str, "SecureChatCompletion"] = {}
        if self._key_dir is not None:
            # The key directory is opened (or created) on first use, in Rust;
            # with a password, load it here so that it is not kept.
            if key_password is not None and os.path.exists(os.path.join(self._key_dir, "private_key.pem")):
                self.client.load_keys(
                    os.path.join(self._key_dir, "private_key.pem"),
                    os.path.join(self._key_dir, "public_key.pem"),
                    key_password,
                )
            elif key_password is not None:
                self.client.generate_keys(save_to_file=True, key_dir=self._key_dir, password=key_password)

    def _instance_for(self, base_url: Optional[str]) -> "SecureChatCompletion":
        if base_url is None:
            return self
        other = self._overrides.get(base_url)
        if other is None:
            other = type(self)(
                base_url=base_url,
                allow_http=self.client.allow_http,
                api_key=self.api_key,
                secure_memory=self._secure_memory_enabled,
                key_dir=self._key_dir,
                max_retries=self.client.max_retries,
                key_password=self._key_password,
                **self._options,
            )
            self._overrides[base_url] = other
        return other

    async def create(self, model: str, messages: List[Dict[str, Any]], **kwargs) -> Dict[str, Any]:
        """Creates a chat completion: every OpenAI parameter (`temperature`,
        `max_tokens`, `tools`, `tool_choice`, `response_format`, ...) is
        passed through sealed; `security_tier` ("standard", "high",
        "maximum"), `api_key` and `base_url` apply to this request only.
        Returns `nomyo`'s answer dict, `_metadata` included. With
        `stream=True` (protocol v2) returns an async iterator of chunk dicts;
        leaving it early cancels the request."""
        base_url = kwargs.pop("base_url", None)
        security_tier = kwargs.pop("security_tier", None)
        api_key_override = kwargs.pop("api_key", None)
        stream = bool(kwargs.pop("stream", False))
        _check_tier(security_tier)
        instance = self._instance_for(base_url)
        api_key = api_key_override if api_key_override is not None else instance.api_key
        payload = {"model": model, "messages": messages, **kwargs}
        native = instance.client._native(api_key, instance._key_dir)
        return await native.create(payload, security_tier, stream)

    async def acreate(self, model: str, messages: List[Dict[str, Any]], **kwargs) -> Dict[str, Any]:
        """Alias of `create`."""
        return await self.create(model, messages, **kwargs)


def _resolve(future, ok, value):
    """Hands a result from the Rust runtime to an asyncio future (called in
    the event loop's thread); a future already cancelled is left alone."""
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
